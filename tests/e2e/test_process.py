"""The replicator as a process, as an operator starts it: the version, a port already in use, a
second daemon on one SQLite store. Each answer is a message and exit 1, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from replicator import __version__
from tests.e2e.conftest import Project
from tests.support.daemons import wait_ready
from tests.support.local_server import free_port


def _config(root: Path) -> Path:
    (root / "org.yaml").write_text(yaml.safe_dump({"kind": "meshWorkspace", "metadata": {"name": "ws"}}))
    path = root / "replicator.yaml"
    path.write_text(yaml.safe_dump({"state": "sqlite:///state.db", "inventory": ["org.yaml"]}))
    return path


def _run(config: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "replicator", "-c", str(config), "--log-format", "json", "run"]
    return subprocess.Popen(
        [*argv, "--listen", f"127.0.0.1:{port}", "--grace", "1", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )


def test_version() -> None:
    r = subprocess.run([sys.executable, "-m", "replicator", "--version"], capture_output=True, text=True)
    assert (r.returncode, r.stdout.strip()) == (0, f"replicator {__version__}")


def test_a_port_in_use_is_a_message_and_exit_1(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _run(config, port)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert "Traceback" not in err + out
    # Nothing started before the port was refused: the SQLite store is not claimed.
    port = free_port()
    proc = _run(config, port)
    try:
        wait_ready(proc, port, 30, lambda: proc.communicate()[1][-2000:])
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize("replica", [[], ["--replica-id", "same"]], ids=["default ids", "one id given twice"])
def test_a_second_daemon_on_one_sqlite_store_is_refused(tmp_path: Path, replica: list[str]) -> None:
    config = _config(tmp_path)
    first_port = free_port()
    first = _run(config, first_port, *replica)
    try:
        wait_ready(first, first_port, 30, lambda: first.communicate()[1][-2000:])
        second = _run(config, free_port(), *replica)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1, err
        assert "is in use by" in err
        assert "SQLite serves one replica" in err
        assert "Traceback" not in err
    finally:
        first.terminate()
        first.communicate(timeout=30)
    assert first.returncode == 0


def test_a_long_plan_shows_progress_on_a_terminal_and_none_in_a_pipe(proj: Project) -> None:
    """stderr a terminal (a pseudo-terminal here) and a run slower than the bar's delay: the bar
    appears; the same run with stderr in a pipe prints no bar."""
    import pty

    from replicator.cli.common import ProgressBar
    from tests.e2e.test_daemon import three_tenants
    from tests.support.faults import FaultProxy

    proj.write_inventory(three_tenants())
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    env.pop("NO_COLOR", None)
    argv = [sys.executable, "-m", "replicator", "-c", str(proj.config_path), "plan"]
    # Every answer of moto held 0.8 s: the plan takes several seconds.
    with FaultProxy(proj.aws.url, rate=1.0, faults={"slow": 1.0}, slow_seconds=0.8) as proxy:
        proj.platform_extra = {"aws": proj.aws.driver_options(endpointUrl=proxy.url)}
        proj.write_config()
        main, terminal = pty.openpty()
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=terminal, env=env)
            os.close(terminal)
            shown = b""
            while True:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # EIO: the process closed its end
                    break
                if not chunk:
                    break
                shown += chunk
            out = proc.communicate(timeout=60)[0]
        finally:
            os.close(main)
        assert proc.returncode == 0, shown.decode(errors="replace")
        assert b"plan" in shown
        assert "\u2501".encode() in shown, "rich's bar"
        assert b"Plan:" in out or b"+ " in out, "the plan itself goes to stdout"
        assert "\u2501".encode() not in out

        started = time.monotonic()
        piped = subprocess.run(argv, capture_output=True, env=env, timeout=60)
        took = time.monotonic() - started
    assert piped.returncode == 0
    assert took > ProgressBar.DELAY + 1, "slow enough for the bar, had stderr been a terminal"
    assert "\u2501".encode() not in piped.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    """`replicator schema | head -1`: the pipe closes before the output is written; no message."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "replicator", "schema"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert err == ""
