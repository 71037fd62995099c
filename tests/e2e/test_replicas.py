"""Two `replicator run` processes on one real PostgreSQL store and one moto server: they split the
tenants, never work on one tenant at once (proved from the audit trail), and when one is killed
with SIGKILL the other finishes its tenants once the lease TTL has passed."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from state import Store
from tests.e2e.conftest import PLATFORM, Project, binding, project, tenant, user, workspace
from tests.e2e.test_daemon import free_port
from tests.e2e.test_daemon import wait_ready as daemon_ready
from tests.integration.test_store import _postgres_database

pytestmark = pytest.mark.integration

TENANTS = 16
LEASE_TTL = 3.0


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _postgres_database()


def many_tenants() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [user(n, n) for n in ("alice", "bob", "carol", "dave", "erin")]
    docs.append(workspace("fleet"))
    for i in range(TENANTS):
        name = f"p{i:02d}"
        docs += [
            project("fleet", name),
            tenant("fleet", name, f"3000000000{i:02d}"),
            binding("fleet", name, "admin", "alice"),
            binding("fleet", name, "user", "bob", "carol"),
            binding("fleet", name, "reader", "dave", "erin"),
        ]
    return docs


def start(proj: Project, replica: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    argv = [sys.executable, "-m", "replicator", "-c", str(proj.config_path), "--log-format", "json"]
    argv += ["run", "--listen", f"127.0.0.1:{port}", "--replica-id", replica, "--workers", "2"]
    log = (proj.root / f"{replica}.log").open("w")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    return proc, port


def wait_ready(proc: subprocess.Popen[str], port: int, proj: Project, replica: str) -> None:
    daemon_ready(proc, port, 60, lambda: (proj.root / f"{replica}.log").read_text())


def test_two_replicas_split_the_work_and_take_over_after_a_kill(proj: Project, pg_url: str) -> None:
    proj.write_config()
    doc = yaml.safe_load(proj.config_path.read_text())
    doc["state"] = pg_url
    # A budget slow enough that the kill lands in the middle of the work (the replicas split it).
    doc["schedule"] = {"interval": "10m", "leaseTtl": LEASE_TTL, "rateLimits": {PLATFORM: 25}}
    proj.config_path.write_text(yaml.safe_dump(doc))
    proj.write_inventory(many_tenants())
    keys = [f"fleet/p{i:02d}/{PLATFORM}" for i in range(TENANTS)]

    a, port_a = start(proj, "replica-a")
    b, port_b = start(proj, "replica-b")
    store = Store(pg_url)
    try:
        wait_ready(a, port_a, proj, "replica-a")
        wait_ready(b, port_b, proj, "replica-b")
        deadline = time.monotonic() + 60
        while sum(1 for x in store.audit_trail() if x.outcome == "applied") < 40:
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
        a.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        a.wait(timeout=10)

        def converged() -> bool:
            runs = {r.tenant: r for r in store.last_runs()}
            return all(k in runs and runs[k].outcome == "converged" for k in keys)

        while not converged():
            assert time.monotonic() < killed_at + LEASE_TTL + 90, "replica-b did not finish the work"
            time.sleep(0.2)
        takeover = time.monotonic() - killed_at
        with proj.capsys.disabled():
            print(f"\nall {TENANTS} tenants converged {takeover:.1f} s after replica-a was killed")
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()

    assert b.returncode == 0, (proj.root / "replica-b.log").read_text()
    # Every tenant is as the inventory says, exactly once.
    groups = proj.aws.groups()
    assert len(groups) == 3 * TENANTS
    for i in range(TENANTS):
        assert proj.member_names(f"mst-fleet.p{i:02d}-user") == ["bob", "carol"]
    check = proj.cli("plan", "--detailed-exitcode")
    assert check.code == 0, check.out + check.err

    # No two runs of one tenant overlap: each run's audit interval ends before the next begins.
    intervals: dict[str, dict[int, list[Any]]] = defaultdict(dict)
    for entry in store.audit_trail():
        if entry.run_id is None:
            continue
        span = intervals[entry.tenant].setdefault(entry.run_id, [entry.at, entry.at])
        span[1] = max(span[1], entry.at)
    overlapping = []
    for tenant_key, runs in intervals.items():
        ordered = sorted(runs.values())
        overlapping += [(tenant_key, x, y) for x, y in itertools.pairwise(ordered) if y[0] < x[1]]
    store.close()
    assert overlapping == []
    assert sum(len(r) for r in intervals.values()) >= TENANTS
    # Both replicas did part of the work (the audit events each one logged).
    for replica in ("replica-a", "replica-b"):
        assert '"outcome": "applied"' in (proj.root / f"{replica}.log").read_text(), replica


async def test_the_daemon_exits_when_the_store_is_gone_for_too_long(proj: Project) -> None:
    """The PostgreSQL database disappears under a running daemon: after ``store_outage`` seconds
    it ends itself with the reason (``replicator run`` then exits 1), rather than idling unseen."""
    from sqlalchemy import create_engine, text

    from replicator.service.daemon import Daemon
    from tests.integration.test_store import PG_ADMIN_URL

    gen = _postgres_database()
    url = next(gen)
    proj.write_config()
    doc = yaml.safe_load(proj.config_path.read_text())
    doc["state"] = url
    proj.config_path.write_text(yaml.safe_dump(doc))
    d = Daemon(config_path=proj.config_path, listen=None, workers=1, watch_interval=0.1, store_outage=0.5)
    await d.start()
    try:
        assert d.ready() is None
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
        admin.dispose()
        await asyncio.wait_for(d.exit_requested.wait(), timeout=20)
        assert d.fatal is not None
        assert "was unreachable for" in d.fatal
        assert "(limit 0.5 s)" in d.fatal
        assert (d.ready() or "").startswith("state store unreachable")
    finally:
        await d.stop()
        with contextlib.suppress(StopIteration):
            next(gen)
