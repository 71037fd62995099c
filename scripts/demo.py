"""`make demo`: a real reconcile against a local AWS emulator (moto over HTTP).

Starts moto, seeds the identity store with the demo's users (not all of them: judy is missing and
Mallory's user name has capitals) and three permission sets, copies the demo inventory to
.demo/inventory and writes .demo/replicator.yaml from examples/demo/replicator.yaml.in, then runs
the CLI as a user would: validate, plan, reconcile --all, plan again (no changes), status. Stops
the emulator at the end.

`make demo-keep` (``--keep``) then leaves the emulator up, starts the daemon (`replicator run`) on
it, writes .demo/env for another terminal and prints what to try next: an edit of the inventory,
plan, explain, status, the metrics. Ctrl-C stops the daemon (its graceful stop) and the emulator.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.daemons import wait_ready  # noqa: E402
from tests.support.local_server import free_port  # noqa: E402
from tests.support.moto_aws import MotoAws  # noqa: E402

DEMO = ROOT / "examples" / "demo"
WORK = ROOT / ".demo"
"""The demo's folder (``--work``; set once, at the start of main)."""
PLATFORM_USERS = [
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "Mallory.Smith",
    "oscar",
    "peggy",
]


CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "demo",
    "AWS_SECRET_ACCESS_KEY": "demo",
    "AWS_DEFAULT_REGION": "eu-central-1",
}
LEDGER = "finance/ledger/aws.eu-central-1"


def run(*args: str, expect: tuple[int, ...] = (0,)) -> int:
    # Warnings and errors only on stderr, so the plan and the report stay readable; run without
    # --log-level to see the audit event of every change.
    cmd = [
        sys.executable,
        "-m",
        "replicator",
        "-c",
        str(WORK / "replicator.yaml"),
        "--log-level",
        "warning",
        *args,
    ]
    print(f"\n$ replicator {' '.join(args)}", flush=True)
    rc = subprocess.run(
        cmd,
        env={**os.environ, **CREDENTIALS},
        check=False,
    ).returncode
    print(f"[exit code {rc}]", flush=True)
    if rc not in expect:
        raise SystemExit(f"demo failed: `replicator {' '.join(args)}` exited {rc}, expected {expect}")
    return rc


def main() -> None:
    global WORK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the emulator and a daemon running")
    parser.add_argument("--port", type=int, default=8080, help="the daemon's port with --keep")
    parser.add_argument("--work", type=Path, default=WORK, help="the demo's folder (default .demo)")
    options = parser.parse_args()
    WORK = options.work.resolve()
    started = time.monotonic()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    # A copy, so that the edits suggested by --keep change .demo/, not the repository's example.
    shutil.copytree(DEMO / "inventory", WORK / "inventory")
    with MotoAws() as aws:
        print(f"moto (AWS emulator) listening on {aws.url}")
        for name in PLATFORM_USERS:
            aws.create_user(f"{name}@example.com")
        arns = {
            key: aws.create_permission_set(name)
            for key, name in (("PS_ADMIN", "Admin"), ("PS_POWER", "PowerUser"), ("PS_READ", "ReadOnly"))
        }
        text = (DEMO / "replicator.yaml.in").read_text()
        for key, value in {
            "INVENTORY": "inventory/",
            "IDENTITY_STORE_ID": aws.identity_store_id,
            "INSTANCE_ARN": aws.instance_arn,
            "ENDPOINT_URL": aws.url,
            **arns,
        }.items():
            text = text.replace(f"@{key}@", value)
        (WORK / "replicator.yaml").write_text(text)
        print(
            f"seeded {len(PLATFORM_USERS)} identity-store users and 3 permission sets; "
            f"config written to {WORK / 'replicator.yaml'}"
        )

        run("validate")
        run("plan", "--detailed-exitcode", expect=(2,))
        run("reconcile", "--all")
        run("plan", "--detailed-exitcode", expect=(0,))
        run("status")

        groups = aws.groups()
        print(f"\nAWS now has {len(groups)} groups:")
        for name, gid in sorted(groups.items()):
            print(f"  {name}: {len(aws.members(gid))} members")
        print(f"\ndemo finished in {time.monotonic() - started:.1f}s")
        if options.keep:
            raise SystemExit(keep(options.port))
    print("To leave the emulator and a daemon running and try more: make demo-keep")


def keep(port: int) -> int:
    """The daemon on the emulator until Ctrl-C (or SIGTERM); 0 when both stopped cleanly."""
    if not port_free(port):
        taken, port = port, free_port()
        print(f"port {taken} is in use: the daemon listens on {port} instead")
    url = f"http://127.0.0.1:{port}"
    env_file = WORK / "env"
    env_file.write_text(
        f"# source {shown(WORK)}/env: the demo's replicator on PATH, its config, the emulator's credentials\n"
        f'export PATH="{Path(sys.executable).parent}:$PATH"\n'
        f"export REPLICATOR_CONFIG={WORK / 'replicator.yaml'}\n"
        f"export REPLICATOR_URL={url}\n"
        + "".join(f"export {k}={v}\n" for k, v in CREDENTIALS.items())
    )
    argv = [sys.executable, "-m", "replicator", "-c", str(WORK / "replicator.yaml"), "--log-format"]
    # In this script's process group: Ctrl-C on the terminal reaches both, the daemon stops
    # gracefully by itself and this script waits for it; killing the group stops both.
    daemon = subprocess.Popen(
        [*argv, "console", "run", "--listen", f"127.0.0.1:{port}", "--grace", "5"],
        env={**os.environ, **CREDENTIALS},
    )
    def asked_to_stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the demo as Ctrl-C does

    signal.signal(signal.SIGTERM, asked_to_stop)
    try:
        try:
            wait_ready(daemon, port, 60, lambda: "the daemon stopped while starting; its log is above")
        except AssertionError as e:
            print(f"demo failed: {e}", file=sys.stderr)
            daemon.kill()
            return 1
        work = shown(WORK)
        pad = " " * max(1, 18 - len(work))
        print(NEXT.format(url=url, ledger=LEDGER, work=work, pad=pad), flush=True)
        code = daemon.wait()
        print(f"the daemon stopped by itself (exit {code}); stopping the emulator", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping the daemon (it lets a run in flight finish) and the emulator ...", flush=True)
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            code = daemon.wait()
        print(f"daemon stopped (exit {code}); emulator stopped; {shown(WORK)}/ is kept", flush=True)
        return 0 if code == 0 else 1


NEXT = """
The emulator and a daemon are running; the daemon's log follows below. In another terminal:

  source {work}/env{pad}# replicator on PATH, REPLICATOR_CONFIG, the emulator's credentials
  replicator status                 # last run per tenant, open warnings (judy has no AWS user)
  replicator explain --tenant {ledger} --user bob
  curl -s {url}/metrics | grep -E '^replicator_(warnings|changes_applied_total)'

  # an edit: dave joins the ledger's users; the daemon sees it within 5 s and applies it
  sed -i 's/{{user: 93e49386-judy}}]/{{user: 93e49386-judy}}, {{user: 4e9f4e31-dave}}]/' \\
      {work}/inventory/bindings.yaml
  replicator plan                   # right after the edit: what the daemon is about to apply
  replicator status                 # a few seconds later: applied, in the daemon's log below too
  replicator explain --tenant {ledger} --user dave

Ctrl-C here stops the daemon and the emulator.
"""


def shown(path: Path) -> str:
    """``path`` relative to the working folder when inside it (``.demo``), else in full."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


if __name__ == "__main__":
    main()
