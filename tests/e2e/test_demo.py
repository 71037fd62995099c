"""`make demo` and `make demo-keep` as a new user runs them: the demo's own script, its printed
commands typed into a shell, Ctrl-C at the end. What the daemon did is read back through the CLI
and the metrics; that everything stopped, from the ports."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.support.local_server import free_port

ROOT = Path(__file__).resolve().parents[2]
LEDGER = "finance/ledger/aws.eu-central-1"


class Output:
    """The lines a process prints, collected by a thread, waited for by the test."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.ended = False
        self.cond = threading.Condition()
        assert proc.stdout is not None
        self.thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self.thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    @property
    def text(self) -> str:
        with self.cond:
            return "".join(self.lines)

    def wait_for(self, needle: str, seconds: float) -> str:
        deadline = time.monotonic() + seconds
        with self.cond:
            while needle not in "".join(self.lines):
                left = deadline - time.monotonic()
                printed = "".join(self.lines)[-4000:]
                assert left > 0, f"{needle!r} never printed:\n{printed}"
                assert not self.ended, f"the process ended without printing {needle!r}:\n{printed}"
                self.cond.wait(left)
            return "".join(self.lines)


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATOR_", "AWS_"))}
    return subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def listening(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) == 0


def test_demo_keep_leaves_a_daemon_to_try_and_stops_it_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "scripts/demo.py", "--keep", "--port", str(port), "--work", str(tmp_path / "demo")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a group of its own: a failed test kills the daemon with it
    )
    out = Output(proc)
    try:
        printed = out.wait_for("Ctrl-C here stops the daemon and the emulator.", 240)
        # The one-shot demo ran first: plan (changes), reconcile, plan (none), status.
        assert "$ replicator plan --detailed-exitcode\n" in printed
        assert "$ replicator reconcile --all" in printed
        assert "AWS now has 9 groups" in printed
        emulator = re.search(r"moto \(AWS emulator\) listening on (http://\S+)", printed)
        assert emulator, printed
        url = f"http://127.0.0.1:{port}"
        assert listening(emulator[1])
        assert listening(url)

        # The printed commands, as a user pastes them into another shell.
        commands = printed[printed.index("In another terminal:") : printed.index("Ctrl-C here")]
        source = next(line.split("#")[0].strip() for line in commands.splitlines() if "source " in line)
        status = shell(f"{source} && replicator status -o json", tmp_path)
        assert status.returncode == 0, status.stderr
        tenants = {t["tenant"]: t for t in json.loads(status.stdout)["tenants"]}
        assert len(tenants) == 3
        assert {t["lastRun"]["outcome"] for t in tenants.values()} == {"converged"}, tenants

        edit = re.search(r"^\s*(sed -i .*?bindings\.yaml)$", commands, re.MULTILINE | re.DOTALL)
        assert edit, commands
        edited = shell(f"{source} && {edit[1]}", tmp_path)
        assert edited.returncode == 0, edited.stderr
        assert "4e9f4e31-dave" in (tmp_path / "demo" / "inventory" / "bindings.yaml").read_text()
        # The daemon applies the edit by itself, and counts it.
        added = 'replicator_changes_applied_total{action="add_member",platform="aws.eu-central-1"} 1.0'
        deadline = time.monotonic() + 60
        while added not in httpx.get(f"{url}/metrics").text:
            assert time.monotonic() < deadline, out.text[-4000:]
            time.sleep(0.2)
        out.wait_for("outcome=applied platform=aws.eu-central-1 subject=dave@example.com", 10)
        explained = shell(f"{source} && replicator explain --tenant {LEDGER} --user dave -o json", tmp_path)
        assert explained.returncode == 0, explained.stderr
        chains = {c["group"]: c for c in json.loads(explained.stdout)["chains"]}
        assert chains["mst-finance.ledger-user"]["outcome"] == "in sync: nothing to do"
        assert shell(f"{source} && replicator plan --detailed-exitcode", tmp_path).returncode == 0

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=60) == 0, out.text[-4000:]
    finally:
        try:
            os.killpg(proc.pid, 0)  # anyone left in the demo's process group (its daemon)?
            leftover = True
        except ProcessLookupError:
            leftover = False
        with contextlib.suppress(ProcessLookupError):  # the script and its daemon, if still there
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not leftover, "a process of the demo outlived it"
    out.thread.join(10)
    assert "daemon stopped (exit 0); emulator stopped" in out.text
    assert "Traceback" not in out.text
    assert not listening(url), "the daemon is stopped"
    assert not listening(emulator[1]), "the emulator is stopped"
