"""No-op reconcile cost per platform, for `scripts/bench.py --only noop` (not a test of the suite).

Run by bench.py as `pytest scripts/bench_noop.py` so that every platform is set up exactly as its
end-to-end test sets it up (the same fixtures, the same local servers: moto, Keystone, the real
kube-apiserver, the Azure, GCP and Cloud Foundry servers). Per platform: one converging
`reconcile --all` (which also fills the lookup cache), then one more engine run with the cache
warm, in which the driver counts every request it sends (one per HTTP request or page, see each
driver's docstring; the AWS run goes through the counting proxy too, the Azure and GCP runs are
cross-checked with the servers' own request logs). Then the daemon on the same store: after its
start-up pass, one full resync (``daemon_<platform>`` rows), every request of it counted. Writes
must be 0: the row fails loudly otherwise. Each result is appended as a JSON line to
``$BENCH_NOOP_OUT``.

Lower bound per tenant (the reads that cannot be avoided, lookups served from the cache), with G
the tenant's owned groups in the state store:

- aws: 2 G (an account's assignments can only be listed per group or per permission set, and
  the members per group; two services);
- openstack, azure, gcp: G + 1 (the members of each group, and one read of the scope's role
  assignments: ``role_assignments?scope.project.id``, the ARM list at the scope, getIamPolicy);
- kubernetes: 2 (the groups and the scope, each in one list: the anchor ConfigMaps, which are the
  groups and hold their members, and the namespace's RoleBindings; two kinds of object, and the
  API lists one kind per request);
- cloudfoundry: 1 (one list of the space's roles, which are the memberships and the grants).

The ``*_scan`` rows run the same tenants with ``groupScanThreshold`` lowered to the number of
groups the run names (6; AWS: 3, its run has one tenant), so that the driver reads all groups in
one list first, as any run naming 20 or more groups does by default; that list is one call per
run, not per tenant, and is counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from replicator.engine.runner import Engine, default_driver
from replicator.inputs.loader import load
from replicator.inputs.validate import validate
from state import Store
from tests.e2e.conftest import Project, proj  # noqa: F401 - fixtures of the end-to-end tests
from tests.e2e.test_reconcile_azure import AzProject, az  # noqa: F401
from tests.e2e.test_reconcile_cloudfoundry import CfProject, cf, cf_server  # noqa: F401
from tests.e2e.test_reconcile_gcp import GcpProject, gcp_server, gp  # noqa: F401
from tests.e2e.test_reconcile_kubernetes import KubeProject, kp  # noqa: F401
from tests.e2e.test_reconcile_openstack import OsProject, os_proj  # noqa: F401
from tests.integration.conftest import moto  # noqa: F401
from tests.support.faults import FaultProxy
from tests.support.sessions import azure_server, moto_server  # noqa: F401 - session-wide servers

# Operation names (driver counters) that change something on a platform.
_WRITE = re.compile(
    r"(^|[. ])(create|delete|update|put|patch|post|add|remove|set|grant|revoke|invite|"
    r"CREATE|DELETE|UPDATE|PUT|PATCH|POST)(?![a-z])"
)
_NOT_WRITE = {"uaa_token", "assume_role"}
_SCAN_AT = 6  # the groups a run of the end-to-end tenants names (2 tenants x 3 roles)


def writes_of(calls: dict[str, int]) -> dict[str, int]:
    return {op: n for op, n in calls.items() if op not in _NOT_WRITE and _WRITE.search(op)}


def lower_bound(platform: str, groups: int) -> int:
    if platform == "aws":
        return 2 * groups
    if platform in ("openstack", "azure", "gcp"):
        return groups + 1
    if platform == "kubernetes":
        return 2
    return 1


def measure(
    platform: str,
    config_path: Path,
    store: Store,
    server_count: Callable[[], tuple[int, int]] | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """One no-op engine run (the caller converged first): calls per tenant next to the lower bound.
    ``server_count`` returns (requests, writes) the server or proxy saw since it was last reset."""
    v = validate(load(config_path))
    drivers: list[Any] = []

    def capture(p: Any) -> Any:
        d = default_driver(p)
        drivers.append(d)
        return d

    engine = Engine(v, store, make_driver=capture)
    now = datetime.now(UTC)
    selected = engine.select(now)
    audit_before = len(store.audit_trail())
    report = asyncio.run(engine.run(selected, apply=True, now=now))
    assert report.failed == [], [r.error for r in report.failed]
    applied = sum(r.applied for r in report.results)
    (driver,) = drivers
    calls = dict(driver.api_calls)
    writes = writes_of(calls)
    server = server_count() if server_count else None
    # writes must be 0: the bench row fails loudly otherwise
    assert applied == 0, f"{platform}: a no-op run applied {applied} changes"
    assert not writes, f"{platform}: a no-op run wrote {writes}"
    assert len(store.audit_trail()) == audit_before, f"{platform}: a no-op run audited changes"
    if server is not None:
        assert server[1] == 0, f"{platform}: the server saw {server[1]} writes in a no-op run"
    tenants = len(selected)
    per_run = sum(n for op, n in calls.items() if op in _NOT_WRITE)
    total = sum(calls.values()) - per_run
    groups = sum(
        sum(1 for g in store.owned_groups(d.ref.platform, d.ref.key) if g.platform_id) for d in selected
    )
    bound = sum(
        lower_bound(
            platform,
            sum(1 for g in store.owned_groups(d.ref.platform, d.ref.key) if g.platform_id),
        )
        for d in selected
    )
    row = {
        "platform": label or platform,
        "tenants": tenants,
        "groups": groups,
        "calls": total,
        "per_run_calls": per_run,
        "calls_per_tenant": total / tenants,
        "lower_bound_per_tenant": bound / tenants,
        "ratio": total / bound,
        "writes": 0,
        "by_operation": calls,
        "server_requests": None if server is None else server[0],
    }
    out = os.environ.get("BENCH_NOOP_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
    return row


def daemon_sweep(platform: str, config_path: Path, store: Store, engine_row: dict[str, Any]) -> None:
    """The same no-op as a full resync of the daemon (``POST /v1/reconcile`` does the same as
    ``Daemon.resync``): it starts on the converged store, its start-up pass runs, then the resync;
    every request of that resync's drivers is counted. Row ``daemon_<platform>``, beside the
    engine run's (``reconcile --all``) ``engine_row``."""
    from tests.support.daemons import DriverWatchingDaemon

    async def until(check: Callable[[], bool], what: str) -> None:
        for _ in range(1200):
            if check():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{platform}: the daemon did not finish {what} within 60 s")

    async def run() -> tuple[int, dict[str, int], int]:
        """Tenants, requests by operation and engine runs of the resync."""
        d = DriverWatchingDaemon(config_path=config_path, listen=None, workers=2, watch_interval=0.1, grace=5)
        await d.start()
        try:
            assert d.validated is not None
            keys = set(d.validated.inventory.tenants)

            def idle() -> bool:
                return d.queue.depth() == 0 and not d._in_flight

            def ran(since: dict[str, Any]) -> bool:
                states = {k: d.tenants.get(k) for k in keys}
                done = all(s is not None and s.last_finished != since.get(k) for k, s in states.items())
                return done and idle()

            await until(lambda: ran({}), "its start-up pass")
            d.drivers.clear()
            before = {k: d.tenants[k].last_finished for k in keys}
            audit_before = len(store.audit_trail())
            await d.resync(None)
            await until(lambda: ran(before), "the resync")
            failed = [k for k in keys if not d.tenants[k].last or not d.tenants[k].last.ok]
            assert not failed, f"{platform}: the daemon's resync failed for {failed}"
            assert len(store.audit_trail()) == audit_before, f"{platform}: the daemon's no-op resync audited"
            return len(keys), d.calls(), len(d.drivers)
        finally:
            await d.stop()

    tenants, calls, runs = asyncio.run(run())
    writes = writes_of(calls)
    assert not writes, f"{platform}: the daemon's no-op resync wrote {writes}"
    per_run = sum(n for op, n in calls.items() if op in _NOT_WRITE)
    total = sum(calls.values()) - per_run
    row = {
        "platform": f"daemon_{platform}",
        "tenants": tenants,
        "runs": runs,
        "calls": total,
        "per_run_calls": per_run,
        "calls_per_tenant": total / tenants,
        "engine_calls_per_tenant": engine_row["calls_per_tenant"],
        "lower_bound_per_tenant": engine_row["lower_bound_per_tenant"],
        "by_operation": calls,
    }
    out = os.environ.get("BENCH_NOOP_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")


def _aws(project: Project, label: str, **extra: Any) -> dict[str, Any]:
    with FaultProxy(project.aws.url, rate=0.0) as proxy:
        options = project.aws.driver_options(pollInterval=0.01, maxAttempts=1, endpointUrl=proxy.url, **extra)
        project.platform_extra = {"aws": options}
        project.write_config()
        assert project.cli("reconcile", "--all").code == 0
        proxy.log.clear()

        def seen() -> tuple[int, int]:
            ops = [op for op, _ in proxy.log]
            writes = [op for op in ops if re.search(r"\.(Create|Delete|Update|Put)", op)]
            return len(ops), len(writes)

        row = measure("aws", project.config_path, project.store(), seen, label)
        daemon_sweep(label, project.config_path, project.store(), row)
    assert row["server_requests"] == row["calls"], "the proxy saw what the driver counted"
    return row


def test_aws(proj: Project) -> None:  # noqa: F811
    _aws(proj, "aws")


def test_aws_scan(proj: Project) -> None:  # noqa: F811
    row = _aws(proj, "aws_scan", groupScanThreshold=3)  # its one tenant's groups
    assert row["by_operation"].get("list_groups") == 1, row
    assert "describe_group" not in row["by_operation"], row


def test_openstack(os_proj: OsProject) -> None:  # noqa: F811
    os_proj.converge()
    row = measure("openstack", os_proj.config_path, os_proj.store())
    daemon_sweep("openstack", os_proj.config_path, os_proj.store(), row)


def _scanned(project: OsProject | GcpProject, platform: str, listed: str, not_read: str) -> None:
    """The no-op run of ``project`` with the group scan on: one ``listed`` call, no ``not_read``."""
    project.driver_extra = {"groupScanThreshold": _SCAN_AT}
    project.write_config()
    project.converge()
    row = measure(platform, project.config_path, project.store(), label=f"{platform}_scan")
    daemon_sweep(f"{platform}_scan", project.config_path, project.store(), row)
    assert row["by_operation"].get(listed) == 1, row
    assert not_read not in row["by_operation"], row


def test_openstack_scan(os_proj: OsProject) -> None:  # noqa: F811
    _scanned(os_proj, "openstack", "list_groups", "get_group")


def test_kubernetes(kp: KubeProject) -> None:  # noqa: F811
    kp.converge()
    store = Store(f"sqlite:///{kp.root / 'state.db'}")
    row = measure("kubernetes", kp.config_path, store)
    daemon_sweep("kubernetes", kp.config_path, store, row)


def test_azure(az: AzProject) -> None:  # noqa: F811
    az.converge()
    az.azure.requests.clear()

    def seen() -> tuple[int, int]:
        # the token endpoint is asked once per run, not per tenant
        methods = [m for api, m, _ in az.azure.iter_requests() if api != "token"]
        return len(methods), sum(1 for m in methods if m != "GET")

    row = measure("azure", az.config_path, az.store(), seen)
    daemon_sweep("azure", az.config_path, az.store(), row)


def test_gcp(gp: GcpProject) -> None:  # noqa: F811
    gp.converge()
    row = measure("gcp", gp.config_path, gp.store())
    daemon_sweep("gcp", gp.config_path, gp.store(), row)


def test_gcp_scan(gp: GcpProject) -> None:  # noqa: F811
    _scanned(gp, "gcp", "groups.list", "groups.get")


def test_cloudfoundry(cf: CfProject) -> None:  # noqa: F811
    cf.converge()
    row = measure("cloudfoundry", cf.config_path, cf.store())
    daemon_sweep("cloudfoundry", cf.config_path, cf.store(), row)
