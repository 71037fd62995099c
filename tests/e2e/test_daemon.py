"""`replicator run` in-process against moto (kopf's KopfRunner idea), and as a real process for
signals. The HTTP surface is exercised over real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import yaml

from replicator.service.daemon import Budget, Daemon
from replicator.service.workqueue import Priority
from tests.e2e.conftest import PLATFORM, Project, standard_inventory
from tests.support.daemons import wait_ready
from tests.support.local_server import free_port

LEDGER = f"finance/ledger/{PLATFORM}"
READ, WRITE = "read-key-value", "write-key-value"


def with_api(proj: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEY_READ", READ)
    monkeypatch.setenv("KEY_WRITE", WRITE)
    proj.write_config()
    doc = yaml.safe_load(proj.config_path.read_text())
    doc["api"] = {
        "keys": [
            {"name": "dash", "secret": {"env": "KEY_READ"}, "scopes": ["read"]},
            {"name": "ci", "secret": {"env": "KEY_WRITE"}, "scopes": ["read", "write"]},
        ]
    }
    proj.config_path.write_text(yaml.safe_dump(doc))


async def eventually(check: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def daemon(proj: Project, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Daemon]:
    with_api(proj, monkeypatch)
    d = Daemon(config_path=proj.config_path, listen=("127.0.0.1", 0), workers=2, watch_interval=0.1, grace=5)
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


def three_tenants() -> list[dict[str, object]]:
    """The standard inventory (ledger) and two more tenants: payroll and audit, erin an admin."""
    from tests.e2e.conftest import binding, project, tenant

    more = [
        doc
        for name, account in (("payroll", "222222222222"), ("audit", "333333333333"))
        for doc in (
            project("finance", name),
            tenant("finance", name, account),
            binding("finance", name, "admin", "erin"),
        )
    ]
    return [*standard_inventory(), *more]


def converged(d: Daemon, key: str = LEDGER) -> bool:
    s = d.tenants.get(key)
    return bool(s and s.last and s.last.ok and s.last_success)


async def test_starts_reconciles_and_serves(daemon: Daemon, proj: Project) -> None:
    await eventually(lambda: converged(daemon))
    assert proj.member_names("mst-finance.ledger-user") == ["bob", "carol"]
    base = f"http://127.0.0.1:{daemon.port}"
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).text == "ready\n"
        metrics = (await http.get("/metrics")).text
        assert f'replicator_changes_applied_total{{action="add_member",platform="{PLATFORM}"}} 4.0' in metrics
        assert 'replicator_reconcile_duration_seconds_count{platform="aws.eu-central-1"} 1.0' in metrics
        assert "replicator_last_success_timestamp_seconds" in metrics
        assert "replicator_queue_depth 0.0" in metrics
        assert "_created" not in metrics, "no *_created series: nothing uses them"

        assert (await http.get("/v1/status")).status_code == 401
        assert (await http.get("/v1/status", headers={"Authorization": "Bearer wrong"})).status_code == 401
        status = (await http.get("/v1/status", headers={"Authorization": f"Bearer {READ}"})).json()
        (tenant,) = status["tenants"]
        assert (tenant["tenant"], tenant["outcome"], tenant["changesApplied"]) == (LEDGER, "converged", 10)
        assert status["sources"] == []  # no identity source has synced

        url = "/v1/tenants/finance/ledger/aws.eu-central-1/reconcile"
        assert (await http.post(url, headers={"Authorization": f"Bearer {READ}"})).status_code == 403
        accepted = await http.post(url, headers={"Authorization": f"Bearer {WRITE}"})
        assert accepted.status_code == 202
        assert accepted.json() == {"tenant": LEDGER, "queued": True}
        missing = await http.post("/v1/tenants/x/y/z/reconcile", headers={"Authorization": f"Bearer {WRITE}"})
        assert missing.status_code == 404
    count = "replicator_reconcile_duration_seconds_count"
    await eventually(lambda: daemon.metrics.registry.get_sample_value(count, {"platform": PLATFORM}) == 2.0)


async def test_an_inventory_change_is_reconciled_at_once(daemon: Daemon, proj: Project) -> None:
    await eventually(lambda: converged(daemon))
    proj.write_inventory(standard_inventory(admin=("alice", "erin"), user=("bob", "carol"), reader=("dave",)))
    await eventually(lambda: proj.member_names("mst-finance.ledger-admin") == ["alice", "erin"])


async def test_a_broken_config_keeps_the_last_good_one(daemon: Daemon, proj: Project) -> None:
    await eventually(lambda: converged(daemon))
    good = proj.config_path.read_text()
    proj.config_path.write_text(good + "\nbogusKey: 1\n")
    await eventually(lambda: daemon.config_error is not None)
    assert "bogusKey" in daemon.config_error
    assert daemon.ready() is None, "still serving the last good config"
    proj.config_path.write_text(good)
    await eventually(lambda: daemon.config_error is None)


async def test_the_deletion_guard_holds_a_tenant_until_its_input_changes(
    daemon: Daemon, proj: Project
) -> None:
    await eventually(lambda: converged(daemon))
    proj.write_inventory(standard_inventory(admin=(), user=(), reader=()))
    await eventually(lambda: daemon.tenants[LEDGER].held is not None)
    assert "DELETION_GUARD" in str(daemon.tenants[LEDGER].held)
    await daemon.resync()
    assert daemon.queue.depth() == 0, "a held tenant is not resynced"
    assert proj.member_names("mst-finance.ledger-user") == ["bob", "carol"]
    proj.write_inventory(standard_inventory(admin=("alice",), user=("bob", "carol"), reader=("dave",)))
    await eventually(lambda: daemon.tenants[LEDGER].held is None and converged(daemon))


async def test_a_paused_budget_holds_every_caller() -> None:
    budget = Budget(rate=None)
    budget.pause(0.3)
    started = time.monotonic()
    await asyncio.gather(*(budget.__aenter__() for _ in range(3)))
    assert time.monotonic() - started >= 0.3


def test_sigterm_stops_the_process_cleanly(proj: Project) -> None:
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "replicator",
            "-c",
            str(proj.config_path),
            "--log-format",
            "json",
            "run",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_ready(proc, port, 30, lambda: proc.stderr.read() if proc.stderr else "")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert '"event": "stopped"' in err
    assert "Traceback" not in err


async def test_a_tenant_another_replica_holds_is_left_to_it(
    proj: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    import replicator.service.daemon as daemon_module

    monkeypatch.setattr(daemon_module, "LEASE_RETRY", 0.2)
    with_api(proj, monkeypatch)
    other = proj.store()
    token = other.acquire_lease(LEDGER, "replica-b", timedelta(minutes=5))
    assert token is not None
    d = Daemon(
        config_path=proj.config_path, replica_id="replica-a", listen=None, workers=1, watch_interval=0.1
    )
    await d.start()
    try:
        await asyncio.sleep(0.6)
        assert proj.aws.groups() == {}, "replica-b holds the tenant: replica-a does not touch it"
        other.release_lease(LEDGER, "replica-b", token)
        await eventually(lambda: converged(d))
        assert other.lease_holder(LEDGER) is None, "released after the reconcile"
    finally:
        await d.stop()
        other.close()


async def test_a_tenant_removed_from_the_inventory_is_deleted_with_delete_removed_tenants(
    proj: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.e2e.conftest import ACCOUNTS, binding, project, tenant

    payroll = [
        project("finance", "payroll"),
        tenant("finance", "payroll", ACCOUNTS["payroll"]),
        binding("finance", "payroll", "admin", "erin"),
    ]
    proj.platform_extra = {"deleteRemovedTenants": True}
    proj.write_inventory([*standard_inventory(), *payroll])
    d = Daemon(config_path=proj.config_path, listen=("127.0.0.1", 0), workers=2, watch_interval=0.1, grace=5)
    with_api(proj, monkeypatch)
    await d.start()
    try:
        await eventually(lambda: len(proj.aws.groups()) == 6)
        proj.write_inventory(standard_inventory())
        await eventually(
            lambda: (
                sorted(proj.aws.groups())
                == ["mst-finance.ledger-admin", "mst-finance.ledger-reader", "mst-finance.ledger-user"]
            )
        )
        assert proj.aws.assignments(ACCOUNTS["payroll"], proj.ps["admin"]) == []
        with proj.store() as store:
            await eventually(lambda: store.tenant_statuses().get(f"finance/payroll/{PLATFORM}") == "Deleted")
    finally:
        await d.stop()


async def test_sqlite_refuses_a_second_replica(proj: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from replicator.service.daemon import DaemonError

    with_api(proj, monkeypatch)
    first = Daemon(config_path=proj.config_path, replica_id="one", listen=None, workers=1, watch_interval=0.1)
    await first.start()
    try:
        second = Daemon(config_path=proj.config_path, replica_id="two", listen=None, workers=1)
        with pytest.raises(DaemonError, match=r"in use by one \(pid \d+, \w+\): SQLite serves one replica"):
            await second.start()
        await second.stop()
    finally:
        await first.stop()
    again = Daemon(config_path=proj.config_path, replica_id="two", listen=None, workers=1)
    await again.start()  # released on a clean stop
    await again.stop()


async def test_a_replica_that_loses_its_lease_stops_applying_at_once(
    proj: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another replica takes the tenant over in the middle of a slow reconcile (our lease expired
    during a pause): the next change is not made, and nothing after it."""
    from sqlalchemy import text

    proj.write_config()
    doc = yaml.safe_load(proj.config_path.read_text())
    doc["schedule"] = {"rateLimits": {PLATFORM: 4}, "leaseTtl": 30}
    proj.config_path.write_text(yaml.safe_dump(doc))
    d = Daemon(config_path=proj.config_path, replica_id="a", listen=None, workers=1, watch_interval=0.1)
    await d.start()
    try:
        with proj.store() as store:

            def applied() -> int:
                return sum(1 for a in store.audit_trail(LEDGER) if a.outcome == "applied")

            await eventually(lambda: applied() >= 2)
            with store.engine.begin() as conn:
                conn.execute(
                    text("UPDATE leases SET holder = 'b', token = token + 1 WHERE tenant = :t"), {"t": LEDGER}
                )
            stolen_at = applied()
            await eventually(lambda: (s := d.tenants.get(LEDGER)) is not None and s.last is not None)
            result = d.tenants[LEDGER].last
            assert result is not None
            assert result.error_kind == "lease"
            assert "lost the lease" in (result.error or "")
            assert d.metrics.registry.get_sample_value("replicator_lease_lost_total") == 1.0
            assert applied() <= stolen_at + 1, "at most the change in flight when the lease went"
            assert store.lease_holder(LEDGER) == "b", "the other replica's lease is left alone"
            trail = store.audit_trail(LEDGER)
            assert sum(1 for a in trail if a.outcome == "started") == sum(
                1 for a in trail if a.outcome in ("applied", "failed")
            ), "no change was left half-recorded"
    finally:
        await d.stop()


def runs(d: Daemon) -> float:
    count = "replicator_reconcile_duration_seconds_count"
    return d.metrics.registry.get_sample_value(count, {"platform": PLATFORM}) or 0.0


def idle(d: Daemon) -> bool:
    return d.queue.depth() == 0 and not d.queue.running(LEDGER) and not d._in_flight


async def test_a_trigger_during_a_run_gives_exactly_one_more_run(
    proj: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    proj.write_config()
    doc = yaml.safe_load(proj.config_path.read_text())
    doc["schedule"] = {"rateLimits": {PLATFORM: 8}}  # a run of some seconds
    proj.config_path.write_text(yaml.safe_dump(doc))
    d = Daemon(config_path=proj.config_path, listen=None, workers=4, watch_interval=0.1)
    await d.start()
    store = proj.store()
    try:
        # Its run has begun (it holds the lease): a change now runs after it, once. (A change
        # that comes while a resync tenant still waits for its turn replaces that run instead.)
        await eventually(lambda: d.queue.running(LEDGER) and store.lease_holder(LEDGER) is not None)
        assert {d.request(LEDGER) for _ in range(5)} == {"running"}
        assert d.queue.depth() == 0, "not taken by a second worker while it runs"
        await eventually(lambda: runs(d) == 2 and idle(d))
        assert runs(d) == 2
        assert converged(d)
    finally:
        await d.stop()
        store.close()


async def test_a_trigger_does_not_reset_the_backoff_of_a_failing_tenant_and_force_does(
    proj: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    from platforms.contract import PlatformError

    calls = 0

    class Broken(Budget):
        async def enter(self, priority: Priority) -> None:
            nonlocal calls
            calls += 1
            raise PlatformError("the platform is broken")

    with_api(proj, monkeypatch)
    d = Daemon(config_path=proj.config_path, listen=("127.0.0.1", 0), workers=2, watch_interval=0.1)
    d.queue.base = 60.0  # the first backoff: 48 to 72 s
    d.budgets[PLATFORM] = Broken(None)

    def failed() -> float:
        return sum(
            s.value
            for metric in d.metrics.registry.collect()
            for s in metric.samples
            if s.name == "replicator_errors_total"
        )

    await d.start()
    try:
        await eventually(lambda: failed() == 1 and d.queue.in_backoff(LEDGER))
        url = f"http://127.0.0.1:{d.port}/v1/tenants/finance/ledger/{PLATFORM}/reconcile"
        auth = {"Authorization": f"Bearer {WRITE}"}
        calls_before = calls
        async with httpx.AsyncClient() as http:
            for _ in range(50):
                answer = await http.post(url, headers=auth)
                assert answer.status_code == 202
                assert answer.json() == {"tenant": LEDGER, "queued": True, "mergedInto": "backoff"}
            assert d.queue.in_backoff(LEDGER)
            assert d.tenants[LEDGER].failures == 1
            assert (failed(), calls) == (1, calls_before), "no run while in backoff"
            forced = await http.post(url + "?force=true", headers=auth)
            assert forced.json() == {"tenant": LEDGER, "queued": True}
        await eventually(lambda: failed() == 2 and d.queue.in_backoff(LEDGER))
        assert d.tenants[LEDGER].failures == 1, "force forgot the failures; the run failed once more"
    finally:
        await d.stop()


async def test_the_periodic_resync_runs(proj: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    proj.write_config()
    doc = yaml.safe_load(proj.config_path.read_text())
    doc["schedule"] = {"interval": "1s", "jitter": "1s"}
    proj.config_path.write_text(yaml.safe_dump(doc))
    d = Daemon(config_path=proj.config_path, listen=None, workers=2, watch_interval=0.1)
    await d.start()
    resyncs = "replicator_workqueue_adds_total"
    try:
        await eventually(lambda: converged(d))
        await eventually(lambda: runs(d) >= 3)
        assert (d.metrics.registry.get_sample_value(resyncs, {"reason": "resync"}) or 0) >= 2
        assert d.metrics.registry.get_sample_value(resyncs, {"reason": "startup"}) == 1
    finally:
        await d.stop()


async def test_two_runs_of_one_tenant_on_one_replica_never_overlap(
    proj: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease is a run's, not a replica's: the second run of a tenant the same replica is
    running finds it held and does nothing."""
    with_api(proj, monkeypatch)
    d = Daemon(config_path=proj.config_path, replica_id="a", listen=None, workers=1)
    assert await d.reload()  # no workers: both runs are started here
    try:
        first, second = await asyncio.gather(d.reconcile(LEDGER), d.reconcile(LEDGER))
        assert first is not None
        assert second is not None
        assert sorted([str(first.error_kind), str(second.error_kind)]) == ["None", "held"]
        done = first if first.ok else second
        assert done.applied == 10
        assert done.lease_token is not None
        with proj.store() as store:
            trail = store.audit_trail(LEDGER)
            assert sum(1 for a in trail if a.outcome == "applied") == 10, "every change made once"
            assert len(store.last_runs()) == 1, "the held run left no run record"
    finally:
        d.queue.close()
        assert d.store is not None
        d.store.close()


async def test_a_full_resync_on_demand_through_the_api_and_the_cli(
    daemon: Daemon, proj: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from replicator.cli.main import main

    await eventually(lambda: converged(daemon))
    resyncs = "replicator_workqueue_adds_total"
    base = f"http://127.0.0.1:{daemon.port}"
    async with httpx.AsyncClient(base_url=base) as http:
        refused = await http.post("/v1/reconcile", headers={"Authorization": f"Bearer {READ}"})
        assert refused.status_code == 403
        unknown = await http.post("/v1/reconcile?platform=nope", headers={"Authorization": f"Bearer {WRITE}"})
        assert (unknown.status_code, unknown.json()) == (404, {"error": "unknown platform 'nope'"})
        answer = await http.post("/v1/reconcile", headers={"Authorization": f"Bearer {WRITE}"})
        assert answer.status_code == 202
        assert answer.json()["tenants"] == 1
    await eventually(
        lambda: (daemon.metrics.registry.get_sample_value(resyncs, {"reason": "resync"}) or 0) >= 1
    )
    await eventually(lambda: runs(daemon) >= 2)

    monkeypatch.setenv("REPLICATOR_API_KEY", WRITE)
    code = await asyncio.to_thread(main, ["resync", "--url", base, "--platform", PLATFORM])
    assert code == 0
    await eventually(lambda: runs(daemon) >= 3)
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["resync", "--url", base, "-o", "json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["tenants"] == 1, "-o json prints the daemon's answer"
    monkeypatch.setenv("REPLICATOR_API_KEY", READ)
    assert await asyncio.to_thread(main, ["resync", "--url", base]) == 1
    monkeypatch.delenv("REPLICATOR_API_KEY")
    assert await asyncio.to_thread(main, ["resync", "--url", base]) == 1
    assert await asyncio.to_thread(main, ["resync", "--url", f"http://127.0.0.1:{free_port()}"]) == 1


async def test_a_sweep_runs_a_platform_s_tenants_together_with_one_group_scan(
    proj: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first sweep hands the tenants of one platform to one run: one driver, one listing of
    every group (groupScanThreshold reached by the batch), instead of reads per tenant."""
    from tests.support.daemons import DriverWatchingDaemon

    proj.driver_extra = {"groupScanThreshold": 4}
    proj.write_inventory(three_tenants())
    with_api(proj, monkeypatch)
    d = DriverWatchingDaemon(config_path=proj.config_path, listen=None, workers=2, watch_interval=0.1)
    await d.start()
    try:
        keys = [f"finance/{name}/{PLATFORM}" for name in ("ledger", "payroll", "audit")]
        await eventually(lambda: all(converged(d, k) for k in keys))
        (driver,) = d.drivers
        calls = getattr(driver, "api_calls", {})
        assert calls["list_groups"] == 1
        assert "describe_group" not in calls, "every group was found in the scan"
    finally:
        await d.stop()


async def test_a_refused_request_is_logged_without_its_credential(daemon: Daemon) -> None:
    from structlog.testing import capture_logs

    wrong = "not-a-key-3f9a2c"
    base = f"http://127.0.0.1:{daemon.port}"
    with capture_logs() as logs:
        async with httpx.AsyncClient(base_url=base) as http:
            assert (
                await http.get("/v1/status", headers={"Authorization": f"Bearer {wrong}"})
            ).status_code == 401
            assert (
                await http.post("/v1/reconcile", headers={"Authorization": f"Bearer {READ}"})
            ).status_code == 403
    refusals = [e for e in logs if e["event"] == "request refused"]
    assert [(e["status"], e["log_level"], e["path"]) for e in refusals] == [
        (401, "warning", "/v1/status"),
        (403, "warning", "/v1/reconcile"),
    ]
    assert refusals[1]["caller"] == "dash", "the key's name, not its value"
    for event in refusals:
        text = repr(event)
        assert wrong not in text
        assert READ not in text


async def test_a_resync_another_replica_finished_meanwhile_is_not_read_again(
    proj: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first sweep finds the tenant held by replica-b; replica-b converges it meanwhile (its
    run recorded in the shared store): replica-a looks again, sees that and does not read the
    platform for it; a run that replica-b did not finish (killed) would be taken over instead."""
    from datetime import timedelta

    import replicator.service.daemon as daemon_module

    monkeypatch.setattr(daemon_module, "LEASE_RETRY", 0.2)
    with_api(proj, monkeypatch)
    other = proj.store()
    token = other.acquire_lease(LEDGER, "replica-b", timedelta(minutes=5))
    assert token is not None
    d = Daemon(
        config_path=proj.config_path, replica_id="replica-a", listen=None, workers=1, watch_interval=0.1
    )
    await d.start()
    try:
        await eventually(lambda: (s := d.tenants.get(LEDGER)) is not None and s.left_to_other_run is not None)
        run = other.start_run(LEDGER, PLATFORM, dry_run=False)
        other.finish_run(run, "converged", 0, 0, None)
        other.release_lease(LEDGER, "replica-b", token)
        await eventually(lambda: d.tenants[LEDGER].left_to_other_run is None)
        await asyncio.sleep(0.5)
        assert d.tenants[LEDGER].last is None, "replica-a made no run of its own"
        assert proj.aws.groups() == {}, "and did not touch the platform"
        assert other.lease_holder(LEDGER) is None
    finally:
        await d.stop()
        other.close()


async def test_a_change_to_a_tenant_waiting_in_a_sweep_batch_runs_at_once_in_its_place(
    proj: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep batch runs its tenants one at a time here (concurrency 1, in key order: audit,
    ledger, payroll); a trigger for payroll while ledger runs: payroll is run once, for the
    change, not once in the batch and once more after it."""

    proj.write_inventory(three_tenants())
    proj.write_config()
    doc = yaml.safe_load(proj.config_path.read_text())
    doc["schedule"] = {"rateLimits": {PLATFORM: 8}, "concurrency": {PLATFORM: 1}}
    proj.config_path.write_text(yaml.safe_dump(doc))
    payroll = f"finance/payroll/{PLATFORM}"
    d = Daemon(config_path=proj.config_path, listen=None, workers=2, watch_interval=0.1)
    await d.start()
    store = proj.store()
    try:
        await eventually(lambda: store.lease_holder(LEDGER) is not None)
        assert d.queue.running(payroll), "payroll waits for its turn in the start-up batch"
        assert store.lease_holder(payroll) is None
        assert d.request(payroll) == "running"
        keys = [LEDGER, payroll, f"finance/audit/{PLATFORM}"]
        await eventually(lambda: all(converged(d, k) for k in keys) and d.queue.depth() == 0, within=60)
        await eventually(lambda: not d._in_flight and not d.queue.running(payroll))
        await asyncio.sleep(0.5)  # a second run of payroll would have begun by now
        assert runs(d) == 3, "one run each: the batch left payroll out when its change came"
    finally:
        await d.stop()
        store.close()


async def test_a_triggered_run_logs_its_start_and_its_end_with_what_it_did(daemon: Daemon) -> None:
    from structlog.testing import capture_logs

    await eventually(lambda: converged(daemon))
    url = f"http://127.0.0.1:{daemon.port}/v1/tenants/finance/ledger/{PLATFORM}/reconcile"
    with capture_logs() as logs:
        async with httpx.AsyncClient() as http:
            assert (await http.post(url, headers={"Authorization": f"Bearer {WRITE}"})).status_code == 202
        await eventually(lambda: any(e["event"] == "reconcile finished" for e in logs))
    started = next(e for e in logs if e["event"] == "reconcile started")
    finished = next(e for e in logs if e["event"] == "reconcile finished")
    assert next(e for e in logs if e["event"] == "trigger queued")["tenant"] == LEDGER
    for event in (started, finished):
        assert (event["tenant"], event["replica"], event["reason"]) == (
            LEDGER,
            daemon.replica_id,
            "api trigger",
        )
        assert event["queue_wait"] >= 0
    assert finished["outcome"] == "converged"
    assert finished["changes"] == 0
    assert isinstance(finished["run_id"], int)
    assert isinstance(finished["lease_token"], int)
    assert finished["duration"] > 0
    assert finished["platform_calls"] > 0, "a run of one tenant says what it sent"


async def test_unknown_query_parameters_and_a_bad_force_are_400(daemon: Daemon) -> None:
    base = f"http://127.0.0.1:{daemon.port}"
    auth = {"Authorization": f"Bearer {WRITE}"}
    trigger = f"/v1/tenants/finance/ledger/{PLATFORM}/reconcile"
    async with httpx.AsyncClient(base_url=base, headers=auth) as http:
        typo = await http.post("/v1/reconcile", params={"platfrom": PLATFORM})
        assert (typo.status_code, "platfrom" in typo.json()["error"]) == (400, True)
        assert (await http.post(trigger, params={"forse": "true"})).status_code == 400
        assert (await http.post(trigger, params={"force": "maybe"})).status_code == 400
        assert (await http.post(trigger, params={"force": "false"})).status_code == 202
