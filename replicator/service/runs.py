"""What a daemon worker does with a tenant key: take it from the queue, run the tenant under its
lease, record the outcome (status, metrics, logs) and decide when the tenant runs next (done,
backoff, requeue, hold)."""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from replicator.core.compile import compile_tenant
from replicator.core.model import DesiredTenant
from replicator.engine.leases import TenantLeases
from replicator.engine.results import (
    Changed,
    Converged,
    Failed,
    FailureKind,
    Requeue,
    TenantResult,
)
from replicator.engine.runner import Engine
from replicator.logs import get_logger
from replicator.service.workqueue import Item, Priority, TenantState
from replicator.threads import blocking
from state import StoreError

if TYPE_CHECKING:
    from replicator.service.daemon import Daemon

log = get_logger("replicator.service.daemon")


SWEEP_BATCH = 500
"""Resync keys of one platform a worker takes at once: the run reads what the platform lets it
read in bulk (a scan of every group) once for the batch, as ``reconcile --all`` does. The scan
pays off when the batch names more groups than the scan has pages (100 groups a page on AWS):
with 10,000 groups, batches of 50 gave the scan up after 25 pages each and read group by group
(`make bench`: ``daemon_many_tenants_sweep``). A tenant of a batch that gets a change before its
turn leaves the batch and runs at change priority, so a large batch does not hold changes up."""


async def work(daemon: Daemon) -> None:
    """One worker: take keys until the daemon stops; a key is never run by two workers at once.
    Resync batches run on all workers but one, so that a change never waits for a sweep."""
    while not daemon.stopping.is_set():
        slots = max(1, daemon.workers - 1)
        take = asyncio.ensure_future(daemon.queue.take(batch=SWEEP_BATCH, resync_slots=slots))
        stop = asyncio.ensure_future(daemon.stopping.wait())
        done, _ = await asyncio.wait({take, stop}, return_when=asyncio.FIRST_COMPLETED)
        if take not in done:
            take.cancel()
            return
        stop.cancel()
        await _run_taken(daemon, take.result())


async def _run_taken(daemon: Daemon, items: list[Item]) -> None:
    """Run the keys a worker took, releasing each to the queue as its run ends."""
    released: set[str] = set()

    def release(key: str) -> None:
        """The key's run ended (or was left out): a change that came meanwhile waits again now."""
        if key not in released:
            released.add(key)
            daemon.queue.done(key)

    task = asyncio.ensure_future(reconcile_items(daemon, items, release))
    daemon._in_flight.add(task)
    try:
        await asyncio.shield(task)
    except Exception:  # a bug: logged, the tenants are retried after their backoff
        log.exception("reconcile crashed", tenants=[i.key for i in items], replica=daemon.replica_id)
        for item in items:
            if item.key not in released:
                daemon.queue.retry(item.key)
    finally:
        daemon._in_flight.discard(task)
        for item in items:
            release(item.key)


async def reconcile(daemon: Daemon, key: str, item: Item | None = None) -> TenantResult | None:
    """Run one tenant now (``item``: as the queue handed it), and record the outcome."""
    results = await reconcile_items(daemon, [item or Item(key, "direct", 0.0)])
    return results.get(key)


async def reconcile_items(
    daemon: Daemon, items: list[Item], release: Callable[[str], None] | None = None
) -> dict[str, TenantResult]:
    """Run these tenants in one engine run (one driver per platform, its bulk reads shared), each
    under its own lease, and record each outcome as it ends. ``release(key)`` is called as each
    tenant's run ends, so that a change that came meanwhile runs at once, not after the batch; a
    resync tenant that changed before its turn came is released without running (its change
    runs instead, at change priority)."""
    v, store = daemon.validated, daemon.store
    if v is None or store is None:
        return {}
    now = datetime.now(UTC)
    ttl = timedelta(seconds=v.config.schedule.lease_ttl)
    removed: dict[str, DesiredTenant] | None = None
    desired: list[DesiredTenant] = []
    by_key: dict[str, Item] = {}
    for item in items:
        if await _done_elsewhere(daemon, item):
            continue
        tenant = v.inventory.tenants.get(item.key)
        if tenant is not None:
            platform = tenant.metadata.platform_identifier
            if platform not in v.capabilities:
                continue
            caps = v.capabilities[platform]
            desired.append(await blocking(compile_tenant, v.config, v.inventory, tenant, caps, now))
        else:
            removed = await blocking(daemon._removed, v) if removed is None else removed
            if item.key not in removed:
                continue
            desired.append(removed[item.key])
        by_key[item.key] = item
    if not desired:
        return {}
    priority = min(i.priority for i in by_key.values())
    for d in desired:
        item = by_key[d.ref.key]
        log.info("reconcile started", **_context(daemon, item), batch=len(desired))
    results: dict[str, TenantResult] = {}

    def finished(result: TenantResult) -> None:
        results[result.key] = result
        _finished(daemon, by_key[result.key], result, ttl, batch=len(desired))
        if release is not None:
            release(result.key)

    def changed(key: str) -> bool:
        """A change (not another resync) came for the tenant since the batch began."""
        return daemon.queue.dirty(key, Priority.CHANGE)

    def superseded(key: str) -> bool:
        if release is None or priority is not Priority.RESYNC or not changed(key):
            return False
        log.info("reconcile skipped", **_context(daemon, by_key[key]), outcome="superseded by a change")
        release(key)
        return True

    engine = Engine(
        v,
        store,
        make_driver=lambda platform: daemon._driver(platform, priority),
        leases=TenantLeases(store, daemon.replica_id, ttl, on_lost=daemon.metrics.lease_lost.inc),
        gate=lambda platform, key: daemon.gates[platform].enter(priority, lambda: changed(key)),
        skip=superseded,
    )
    report = await engine.run(desired, apply=True, now=now, on_done=finished)
    for platform, calls in report.calls.items():
        daemon.metrics.platform_calls.labels(platform).inc(calls)
    if len(desired) > 1:
        log.info(
            "resync batch finished",
            replica=daemon.replica_id,
            tenants=len(desired),
            platform_calls=sum(report.calls.values()),
        )
    return results


async def _done_elsewhere(daemon: Daemon, item: Item) -> bool:
    """Whether the tenant, left to another run during a resync, was since reconciled to the end
    by it (on another replica): then that resync is done, and not read again here."""
    state = daemon.tenants.get(item.key)
    since = state.left_to_other_run if state is not None else None
    if state is None or since is None or item.reason != "requeue" or daemon.store is None:
        return False
    try:
        (last,) = await blocking(daemon.store.last_runs, item.key) or (None,)
    except StoreError:
        return False
    if last is None or last.finished_at is None or last.finished_at < since or last.outcome != "converged":
        return False
    state.left_to_other_run = None
    log.info("reconcile skipped", **_context(daemon, item), outcome="done elsewhere", run_id=last.id)
    return True


def _context(daemon: Daemon, item: Item) -> dict[str, object]:
    return {
        "tenant": item.key,
        "replica": daemon.replica_id,
        "reason": item.reason,
        "queue_wait": round(item.waited, 3),
    }


def _finished(daemon: Daemon, item: Item, result: TenantResult, ttl: timedelta, batch: int) -> None:
    state = daemon.tenants.setdefault(item.key, TenantState())
    record(daemon, item.key, result.platform, state, result, ttl, item.priority)
    outcome = result.outcome
    if isinstance(outcome, Failed) and outcome.kind is FailureKind.HELD:
        label = "held elsewhere"
    else:
        daemon.metrics.reconcile_seconds.labels(result.platform).observe(result.duration)
        label = type(outcome).__name__.lower()
    log.info(
        "reconcile finished",
        **_context(daemon, item),
        run_id=result.run_id,
        lease_token=result.lease_token,
        duration=round(result.duration, 3),
        outcome=label,
        error_kind=outcome.kind.value if isinstance(outcome, Failed) else None,
        changes=result.applied,
        platform_calls=result.calls,
        failures=state.failures,
        batch=batch,
    )


def record(
    daemon: Daemon,
    key: str,
    platform: str,
    state: TenantState,
    result: TenantResult,
    ttl: timedelta,
    priority: Priority = Priority.CHANGE,
) -> None:
    """Remember the run, count it, and queue the tenant again when its outcome asks for it."""
    if isinstance(result.outcome, Failed) and result.outcome.kind is FailureKind.HELD:
        # Another run has it: not a run of ours to remember. It is looked at again later (that
        # run may die with its replica); a resync that run finished meanwhile is not repeated.
        if priority is Priority.RESYNC and state.left_to_other_run is None:
            state.left_to_other_run = datetime.now(UTC)
        if not daemon.stopping.is_set():
            daemon.queue.add_after(key, daemon._lease_retry(ttl), platform=platform)
        return
    state.left_to_other_run = None
    state.last, state.last_finished = result, datetime.now(UTC)
    metrics, queue = daemon.metrics, daemon.queue
    if result.plan is not None:
        for change in result.plan.changes[: result.applied]:
            metrics.changes.labels(platform, change.action.value).inc()
        before = daemon._warnings.get(key, Tally())
        now = daemon._warnings[key] = Tally(w.code.value for w in result.warnings)
        if appeared := sorted(set(now) - set(before)):
            log.warning("warnings appeared", tenant=key, codes=appeared)
        if cleared := sorted(set(before) - set(now)):
            log.warning("warnings cleared", tenant=key, codes=cleared)
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
            if daemon.validated is not None and key in daemon.validated.inventory.tenants:
                # (not a removed tenant whose deletion ran: see ``Metrics.forget_tenants``)
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
                if not stopping:  # another run took it; look again later
                    queue.add_after(key, daemon._lease_retry(ttl), platform=platform)
            elif not stopping:
                queue.retry(key, platform=platform)
                state.failures = queue.failures(key)
            else:
                state.failures += 1
