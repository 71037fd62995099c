"""`make demo`: a real reconcile against a local AWS emulator (moto over HTTP).

Starts moto, seeds the identity store with the demo's users (not all of them: judy is missing and
Mallory's user name has capitals) and three permission sets, writes .demo/replicator.yaml from
examples/demo/replicator.yaml.in, then runs the CLI as a user would: validate, plan, reconcile
--all, plan again (no changes), status. Stops the emulator at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.moto_aws import MotoAws  # noqa: E402

DEMO = ROOT / "examples" / "demo"
WORK = ROOT / ".demo"
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
        env={
            **os.environ,
            "AWS_ACCESS_KEY_ID": "demo",
            "AWS_SECRET_ACCESS_KEY": "demo",
            "AWS_DEFAULT_REGION": "eu-central-1",
        },
        check=False,
    ).returncode
    print(f"[exit code {rc}]", flush=True)
    if rc not in expect:
        raise SystemExit(f"demo failed: `replicator {' '.join(args)}` exited {rc}, expected {expect}")
    return rc


def main() -> None:
    started = time.monotonic()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
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
            "INVENTORY": str(DEMO / "inventory"),
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


if __name__ == "__main__":
    main()
