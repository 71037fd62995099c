"""What a daemon worker does with a tenant key: take it from the queue, run the tenant under its
lease, record the outcome (status, metrics, logs) and decide when the tenant runs next (done,
backoff, requeue, hold)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from replicator.core.compile import compile_tenant
from replicator.engine.results import (
    Changed,
    Converged,
    Failed,
    FailureKind,
    Requeue,
    RunReport,
    TenantResult,
)
from replicator.engine.runner import Engine, Fence
from replicator.logs import get_logger
from replicator.service.leases import run_under_lease
from replicator.service.workqueue import Item, TenantState
from replicator.threads import blocking

if TYPE_CHECKING:
    from replicator.service.daemon import Daemon

log = get_logger("replicator.service.daemon")


async def work(daemon: Daemon) -> None:
    """One worker: take keys until the daemon stops; a key is never run by two workers at once."""
    while not daemon.stopping.is_set():
        get = asyncio.ensure_future(daemon.queue.get())
        stop = asyncio.ensure_future(daemon.stopping.wait())
        done, _ = await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
        if get not in done:
            get.cancel()
            return
        stop.cancel()
        item = get.result()
        task = asyncio.ensure_future(reconcile(daemon, item.key, item))
        daemon._in_flight.add(task)
        try:
            await asyncio.shield(task)
        except Exception:  # a bug: logged, the tenant is retried after its backoff
            log.exception("reconcile crashed", tenant=item.key, replica=daemon.replica_id)
            daemon.queue.retry(item.key)
        finally:
            daemon._in_flight.discard(task)
            daemon.queue.done(item.key)


async def reconcile(daemon: Daemon, key: str, item: Item | None = None) -> TenantResult | None:
    v, store = daemon.validated, daemon.store
    if v is None or store is None:
        return None
    tenant = v.inventory.tenants.get(key)
    removed = None if tenant is not None else (await blocking(daemon._removed, v)).get(key)
    if tenant is not None:
        platform = tenant.metadata.platform_identifier
    elif removed is not None:
        platform = removed.ref.platform
    else:
        return None
    state = daemon.tenants.setdefault(key, TenantState())
    now = datetime.now(UTC)
    ttl = timedelta(seconds=v.config.schedule.lease_ttl)
    started = 0.0
    context = {
        "tenant": key,
        "replica": daemon.replica_id,
        "reason": item.reason if item else "direct",
        "queue_wait": round(item.waited, 3) if item else 0.0,
    }
    log.info("reconcile started", **context)
    began = time.monotonic()

    async def run(fence: Fence) -> RunReport:
        nonlocal started
        desired = (
            await blocking(compile_tenant, v.config, v.inventory, tenant, v.capabilities[platform], now)
            if tenant is not None
            else removed
        )
        assert desired is not None  # one of the two, see above
        engine = Engine(v, store, make_driver=daemon._driver, fence=fence)
        started = time.monotonic()
        async with daemon.gates[platform]:
            return await engine.run([desired], apply=True, now=now)

    report = await run_under_lease(store, key, daemon.replica_id, ttl, run)
    if report is None:
        holder = await blocking(store.lease_holder, key)
        duration = round(time.monotonic() - began, 3)
        log.info("reconcile finished", **context, duration=duration, outcome="held elsewhere", holder=holder)
        if not daemon.stopping.is_set():
            daemon.queue.add_after(key, daemon._lease_retry(ttl), platform=platform)
        return None
    daemon.metrics.reconcile_seconds.labels(platform).observe(time.monotonic() - started)
    (result,) = report.results
    record(daemon, key, platform, state, result, ttl)
    outcome = result.outcome
    log.info(
        "reconcile finished",
        **context,
        duration=round(time.monotonic() - began, 3),
        outcome=type(outcome).__name__.lower(),
        error_kind=outcome.kind.value if isinstance(outcome, Failed) else None,
        changes=result.applied,
        failures=state.failures,
    )
    return result


def record(
    daemon: Daemon, key: str, platform: str, state: TenantState, result: TenantResult, ttl: timedelta
) -> None:
    """Remember the run, count it, and queue the tenant again when its outcome asks for it."""
    state.last, state.last_finished = result, datetime.now(UTC)
    metrics, queue = daemon.metrics, daemon.queue
    if result.plan is not None:
        for change in result.plan.changes[: result.applied]:
            metrics.changes.labels(platform, change.action.value).inc()
        before = daemon._warnings.get(key, Tally())
        now = daemon._warnings[key] = Tally(w.code.value for w in result.warnings)
        if appeared := sorted(set(now) - set(before)):
            log.info("warnings appeared", tenant=key, codes=appeared)
        if cleared := sorted(set(before) - set(now)):
            log.info("warnings cleared", tenant=key, codes=cleared)
        totals: Tally[str] = Tally()
        for per_tenant in daemon._warnings.values():
            totals.update(per_tenant)
        for code in {*totals, *before}:
            metrics.warnings.labels(code).set(totals.get(code, 0))
    stopping = daemon.stopping.is_set()
    match result.outcome:
        case Converged() | Changed():
            queue.forget(key)
            state.failures, state.last_success = 0, state.last_finished
            metrics.last_success.labels(key).set(state.last_finished.timestamp())
        case Requeue(after=after):
            metrics.requeues.labels(platform).inc()
            if not stopping:
                queue.add_after(key, after, platform=platform)
        case Failed(kind=kind, error=error):
            metrics.errors.labels(platform, kind.value).inc()
            if kind is FailureKind.GUARD:
                state.held = error
            elif kind is FailureKind.LEASE:
                if not stopping:  # the other replica has it; look again later
                    queue.add_after(key, daemon._lease_retry(ttl), platform=platform)
            elif not stopping:
                queue.retry(key, platform=platform)
                state.failures = queue.failures(key)
            else:
                state.failures += 1
