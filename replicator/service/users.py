"""The daemon's sweep of the users the replicator created (``deprovisionCreatedUsers``), on the
resync schedule: one replica at a time per platform (a lease named ``users/<platform>``), over the
whole inventory, skipped while a tenant of the platform failed last or waits for an operator (its
withheld removals must not be overtaken by a user's deletion)."""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from replicator.engine.deprovision import deprovision, under_lease
from replicator.engine.leases import TenantLeases
from replicator.engine.runner import Engine
from replicator.logs import get_logger
from replicator.service.workqueue import Priority

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from replicator.engine.results import UserResult
    from replicator.service.daemon import Daemon

log = get_logger("replicator.daemon")


async def sweep_users(daemon: Daemon) -> list[UserResult]:
    """Deprovision each enabled platform's created users no binding needs, past the grace period."""
    v, store = daemon.validated, daemon.store
    if v is None or store is None:
        return []
    platforms = [p for p in v.config.platforms if p.deprovision_created_users.enabled]
    if not platforms:
        return []
    now = datetime.now(UTC)
    engine = Engine(v, store)
    await asyncio.to_thread(engine.select, now)  # compiles every tenant: off the event loop
    leases = TenantLeases(store, daemon.replica_id, timedelta(seconds=v.config.schedule.lease_ttl))
    done: list[UserResult] = []
    for platform in platforms:
        p = platform.identifier
        unsettled = sorted(
            k for k, st in daemon.tenants.items()
            if k.endswith(f"/{p}") and (st.held or st.failures or (st.last is not None and not st.last.ok))
        )  # fmt: skip
        if p not in engine.whole_platforms or unsettled:
            left = p not in engine.whole_platforms  # a tenant removed from the inventory is left there
            log.info("users not swept", platform=p, unsettled=unsettled[:5], removed_tenant_left=left)
            continue
        driver = daemon._driver(platform, Priority.RESYNC)
        run = functools.partial(deprovision, store, driver, v, platform, engine.needed[p], apply=True,
                                allow_deletions=False, now=now, audit=engine._audit)  # fmt: skip
        try:
            result = await under_lease(leases, p, run)
        finally:
            await driver.close()
        if result is None:
            continue  # another replica sweeps them
        if result.deleted:
            log.info("users deprovisioned", platform=p, deleted=result.deleted)
        done.append(result)
    return done


def schedule(daemon: Daemon, scheduler: AsyncIOScheduler) -> None:
    """The sweep on the resync's interval, when some platform deprovisions its created users."""
    v = daemon.validated
    if v is None or not any(p.deprovision_created_users.enabled for p in v.config.platforms):
        return

    async def job() -> None:
        try:
            await sweep_users(daemon)
        except Exception:  # a failed sweep is logged and tried again at the next interval
            log.exception("users sweep failed")

    interval = v.config.schedule
    scheduler.add_job(
        job, "interval", seconds=interval.interval, jitter=int(interval.jitter),
        coalesce=True, max_instances=1, id="users",
    )  # fmt: skip
