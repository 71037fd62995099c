"""Metrics that the alert rules of deploy/prometheus need move when their event happens, in a daemon
reconciling against moto: throttled answers (through the fault proxy) per platform, and the last
success of a tenant removed from the inventory. (A lost tenant lease is counted in
test_daemon.py's test_a_replica_that_loses_its_lease_stops_applying_at_once.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from replicator.service.daemon import Daemon
from tests.e2e.conftest import PLATFORM, Project, standard_inventory
from tests.support.faults import FaultProxy, Request

LEDGER = f"finance/ledger/{PLATFORM}"
THROTTLED = "replicator_platform_throttled_total"
LAST_SUCCESS = "replicator_last_success_timestamp_seconds"


async def eventually(check: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def converged(d: Daemon) -> bool:
    s = d.tenants.get(LEDGER)
    return bool(s and s.last and s.last.ok and s.last_success)


def first_writes(count: int) -> Callable[[Request], bool]:
    """A proxy ``match`` that picks the first ``count`` requests that create something."""
    left = [count]

    def match(request: Request) -> bool:
        if left[0] > 0 and ".Create" in request.operation:
            left[0] -= 1
            return True
        return False

    return match


async def test_throttled_answers_are_counted_per_platform_and_other_errors_are_not(proj: Project) -> None:
    throttle = first_writes(2)
    with FaultProxy(proj.aws.url, rate=1.0, faults={"429": 1.0}, retry_after=(1,), match=throttle) as p:
        proj.driver_extra = {"endpointUrl": p.url}
        proj.write_config()
        d = Daemon(config_path=proj.config_path, listen=None, workers=1, watch_interval=0.1)
        await d.start()
        try:
            registry = d.metrics.registry

            def throttled() -> float | None:
                return registry.get_sample_value(THROTTLED, {"platform": PLATFORM})

            await eventually(lambda: throttled() == 0.0)  # the series exists before any throttling
            await eventually(lambda: converged(d))
            assert p.counts["429"] == 2
            assert throttled() == 2.0, "each 429 with Retry-After is counted once"
            last = d.tenants[LEDGER].last
            assert last is not None
            assert last.applied > 0

            # A server error says no wait: it is retried, and not counted as throttling.
            p.set_faults({"500": 1.0})
            p.match = first_writes(1)
            finished = d.tenants[LEDGER].last_finished
            erin_too = standard_inventory(admin=("alice", "erin"), user=("bob", "carol"), reader=("dave",))
            proj.write_inventory(erin_too)
            await eventually(lambda: d.tenants[LEDGER].last_finished != finished and converged(d))
            assert p.counts["500"] == 1
            assert throttled() == 2.0
        finally:
            await d.stop()
    assert "replicator_platform_throttled_total{" in d.metrics.render().decode()


async def test_a_tenant_removed_from_the_inventory_loses_its_last_success(proj: Project) -> None:
    """Nothing reconciles it any more: an alert on the age of its last success would fire for ever."""
    d = Daemon(config_path=proj.config_path, listen=None, workers=1, watch_interval=0.1)
    await d.start()
    try:
        registry = d.metrics.registry
        await eventually(lambda: converged(d))
        assert (registry.get_sample_value(LAST_SUCCESS, {"tenant": LEDGER}) or 0) > 0
        proj.write_inventory([doc for doc in standard_inventory() if doc["kind"] != "meshTenant"])
        await eventually(lambda: d.validated is not None and LEDGER not in d.validated.inventory.tenants)
        assert registry.get_sample_value(LAST_SUCCESS, {"tenant": LEDGER}) is None
        await d.resync()  # the removed tenant is left alone (deleteRemovedTenants is off)
        await asyncio.sleep(0.5)
        assert registry.get_sample_value(LAST_SUCCESS, {"tenant": LEDGER}) is None
    finally:
        await d.stop()
