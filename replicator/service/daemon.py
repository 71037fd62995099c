"""``replicator run``: the long-running controller.

Level-triggered, as controller-runtime and kopf do it: a full resync of every tenant every
``schedule.interval`` (plus jitter), and a single tenant at once when its inventory or config
changes or an operator asks. A de-duplicating queue feeds workers; per platform a concurrency
limit and one request budget per platform quota (split between the replicas working against it,
see ``budgets``); per tenant an exponential backoff after retryable failures,
while a tenant stopped by the deletion guard waits for its input to change or for an operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import time
import uuid
from collections import Counter as Tally
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from platforms.contract import Driver
from replicator.core.config import PlatformConfig
from replicator.core.model import DesiredTenant
from replicator.engine.results import (
    TenantResult,
)
from replicator.engine.runner import default_driver
from replicator.inputs.loader import default_config_path
from replicator.inputs.validate import Validated
from replicator.logs import get_logger
from replicator.service import runs, users
from replicator.service.budgets import Budget, QuotaShares
from replicator.service.gates import PriorityGate
from replicator.service.metrics import Metrics, sample_loop_lag
from replicator.service.reload import Reloaded, Reloads, prepare, removed_tenants, tune_collector, watched
from replicator.service.status import source_syncs, status_doc
from replicator.service.workqueue import Added, Priority, TenantState, WorkQueue
from replicator.sources.apiauth import Caller, identify
from replicator.sources.stored import LoadedCache
from replicator.threads import blocking
from state import Store, StoreError

log = get_logger("replicator.service.daemon")

RETRY_BASE = 5.0
RETRY_MAX = 600.0
LEASE_RETRY = 30.0
"""Seconds (at most half the lease TTL) before a tenant another replica holds is looked at again."""
SQLITE_REPLICA_LEASE = "__replica__"
"""The lease a daemon on a SQLite store holds for the whole store: SQLite serves one replica."""
SQLITE_CLAIM_TTL = timedelta(seconds=30)
"""How long that claim outlives a killed daemon (renewed on every watch tick)."""


class DaemonError(Exception):
    """The daemon cannot run (and says why)."""


@dataclass
class Daemon:
    config_path: Path = field(default_factory=default_config_path)
    replica_id: str = "replicator"
    listen: tuple[str, int] | None = ("0.0.0.0", 8080)
    workers: int = 4
    grace: float = 30.0
    watch_interval: float = 5.0
    store_outage: float = 300.0
    """Seconds the state store may be unreachable before the daemon exits with an error."""
    freeze_heap: bool = False
    """Tune Python's cyclic collector for a large inventory (``reload.tune_collector``) and take
    the heap out of its scans after each full reload (``reload.settle_heap``): for the daemon's
    own process, not for one embedded in another (tests)."""

    def __post_init__(self) -> None:
        self.metrics = Metrics()
        self.validated: Validated | None = None
        self.config_error: str | None = None
        self.store: Store | None = None
        self.loaded_cache = LoadedCache()
        """The inventory as last read or written here: identity sources check a write against it."""
        self.queue = WorkQueue(RETRY_BASE, RETRY_MAX, metrics=self.metrics)
        self.tenants: dict[str, TenantState] = {}
        self.budgets: dict[str, Budget] = {}
        """Platform identifier -> its budget (one per quota owner, see ``budgets``)."""
        self.quotas = QuotaShares(self.replica_id, self.metrics)
        self.gates: dict[str, PriorityGate] = {}
        self.stopping = asyncio.Event()
        self.alive_at = time.monotonic()
        self.port: int | None = None
        self._fingerprint: dict[str, int] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._scheduler: Any = None
        self._server: Any = None
        self._warnings: dict[str, Tally[str]] = {}
        self._sqlite_claim: int | None = None
        """The token of this replica's claim on a SQLite store."""
        self._sqlite_holder = f"{self.replica_id} (pid {os.getpid()}, {uuid.uuid4().hex[:8]})"
        """Who holds that claim: this process, whatever its replica id (two processes started
        with one id, the host name by default, must not both take it)."""
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reloads = Reloads(self._reload)
        self._store_down_since: float | None = None
        self.fatal: str | None = None
        """Why the daemon ends on its own (it then exits 1)."""
        self.exit_requested = asyncio.Event()

    # --- configuration -----------------------------------------------------------------------

    async def reload(self) -> bool:
        """Reload config and inventory now (joining a reload that runs already) and wait for it.
        False when the input is invalid: the last good one keeps running."""
        self._reloads.request()
        await self._reloads.settled()
        return self.config_error is None

    async def settled(self) -> None:
        """Wait until no reload runs or is wanted (one that stored objects asked for included)."""
        await self._reloads.settled()

    async def _reload(self) -> bool:
        """One reload: the slow part in a worker thread, its result applied here on the loop."""
        now = datetime.now(UTC)
        found = await blocking(
            functools.partial(prepare, freeze=self.freeze_heap),
            self.config_path,
            self.store,
            self.validated,
            now,
            self.loaded_cache,
        )
        return self._apply(found)

    def _apply(self, found: Reloaded) -> bool:
        self._fingerprint = found.stamps
        if found.validated is None:
            problems = found.error.problems if found.error is not None else []
            self.config_error = f"{len(problems)} problem(s): " + "; ".join(str(p) for p in problems[:5])
            self.metrics.config_valid.set(0)
            self.loaded_cache.forget()
            log.error("config invalid, keeping the last good one", problems=[str(p) for p in problems])
            return False
        previous, first = self.validated, self.validated is None
        validated = self.validated = found.validated
        self.config_error = None
        if previous is not None:  # a set difference of the keys, not a walk over every series
            gone = previous.inventory.tenants.keys() - validated.inventory.tenants.keys()
            self.metrics.forget_tenants(gone)
        if found.checked is not None:
            self.loaded_cache.keep(found.checked)
        self.metrics.config_valid.set(1)
        self.store = self.store or found.store
        self.budgets = self.quotas.configure(validated.config, self.budgets, self.store)
        self.gates = {
            p.identifier: self.gates.get(p.identifier)
            or PriorityGate(validated.config.schedule.concurrency_for(p.identifier))
            for p in validated.config.platforms
        }
        for key in found.changed:
            state = self.tenants.setdefault(key, TenantState())
            state.held, state.failures = None, 0  # new input: a held tenant may go again, at once
            if first:  # the first sweep: every tenant, in batches as a resync
                self.queue.add(key, platform=self._platform(key), priority=Priority.RESYNC, reason="startup")
            else:
                self.queue.add(key, platform=self._platform(key), reason="input change", force=True)
        for key, removed in sorted(found.removed.items()):
            self.queue.add(key, platform=removed.ref.platform, reason="input change")
        return True

    def _platform(self, key: str) -> str:
        tenant = self.validated.inventory.tenants.get(key) if self.validated else None
        return tenant.metadata.platform_identifier if tenant is not None else ""

    def objects_changed(self) -> None:
        """The stored objects changed on this replica (API write, login, sync): reload soon, without
        waiting for the next watch tick. Returns at once; callable from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            here = asyncio.get_running_loop() is loop
        except RuntimeError:
            here = False
        if here:
            self._reloads.request()
        else:
            loop.call_soon_threadsafe(self._reloads.request)

    def _claim_sqlite(self) -> None:
        """On SQLite (one replica only), hold the store for this replica or refuse to start
        (blocking)."""
        store = self.store
        if store is None or store.engine.dialect.name != "sqlite":
            return
        self._sqlite_claim = store.acquire_lease(SQLITE_REPLICA_LEASE, self._sqlite_holder, SQLITE_CLAIM_TTL)
        if self._sqlite_claim is None:
            holder = store.lease_holder(SQLITE_REPLICA_LEASE)
            raise DaemonError(
                f"the SQLite state store {store.safe_url} is in use by {holder}: SQLite serves "
                "one replica; for several, use PostgreSQL (state: postgresql://...). A replica that was "
                f"killed frees it within {int(SQLITE_CLAIM_TTL.total_seconds())} s."
            )

    def _renew_sqlite_claim(self, store: Store, claim: int) -> None:
        """Extend the claim; one that lapsed (the loop stalled past its TTL) is taken again."""
        if store.renew_lease(SQLITE_REPLICA_LEASE, self._sqlite_holder, claim, SQLITE_CLAIM_TTL):
            return
        again = store.acquire_lease(SQLITE_REPLICA_LEASE, self._sqlite_holder, SQLITE_CLAIM_TTL)
        if again is None:
            log.error("lost the claim on the SQLite store", holder=store.lease_holder(SQLITE_REPLICA_LEASE))
        else:
            self._sqlite_claim = again

    async def _check_store(self) -> None:
        """A store unreachable for longer than ``store_outage`` ends the daemon with an error, so
        that the orchestrator restarts it and people see it (without the store no lease can be
        renewed, so no change is made meanwhile anyway)."""
        if self.store is None:
            return
        try:
            await blocking(self.store.ping)
        except Exception as e:
            now = time.monotonic()
            self._store_down_since = self._store_down_since or now
            down = now - self._store_down_since
            log.error("state store unreachable", seconds=round(down, 1), error=type(e).__name__)
            if down >= self.store_outage and self.fatal is None:
                self.fatal = (
                    f"the state store {self.store.safe_url} was unreachable for {down:.1f} s "
                    f"(limit {self.store_outage:g} s): exiting"
                )
                self.exit_requested.set()
        else:
            self._store_down_since = None

    async def _watch(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.watch_interval)
            self.alive_at = time.monotonic()
            await self._check_store()
            if self._sqlite_claim is not None and self.store is not None:
                with contextlib.suppress(StoreError):
                    await blocking(self._renew_sqlite_claim, self.store, self._sqlite_claim)
            if self._reloads.busy:
                continue  # the reload sets the fingerprint; a change it missed shows next tick
            stamps = await blocking(watched, self.config_path, self.validated, self.store)
            if stamps != self._fingerprint and not self._reloads.busy:
                self._fingerprint = stamps
                log.info("input changed, reloading")
                self._reloads.request()

    # --- work --------------------------------------------------------------------------------

    async def resync(self, platform: str | None = None) -> Tally[Added]:
        """Queue every tenant (of ``platform``) at resync priority: the periodic full reconcile,
        or an operator's (``POST /v1/reconcile``, ``replicator resync``). Tenants the deletion
        guard holds stay held. Returns what the queue did with the keys."""
        added: Tally[Added] = Tally()
        v = self.validated
        if v is None:
            return added
        removed = await blocking(self._removed, v)
        for key, t in sorted(v.inventory.tenants.items()):
            state = self.tenants.setdefault(key, TenantState())
            p = t.metadata.platform_identifier
            if p in v.capabilities and state.held is None and platform in (None, p):
                added[self.queue.add(key, platform=p, priority=Priority.RESYNC, reason="resync")] += 1
        for key, gone in sorted(removed.items()):
            if platform in (None, gone.ref.platform):
                p = gone.ref.platform
                added[self.queue.add(key, platform=p, priority=Priority.RESYNC, reason="resync")] += 1
        return added

    def _removed(self, validated: Validated | None = None) -> dict[str, DesiredTenant]:
        """Tenants removed from the inventory that the daemon may delete (blocking: reads the
        store; see ``removed_tenants``)."""
        validated = validated or self.validated
        if validated is None or self.store is None:
            return {}
        return removed_tenants(validated, self.store)

    def request(self, key: str, force: bool = False) -> Added | None:
        """An operator asked for this tenant now (clears a hold); None when the tenant is unknown.
        A tenant in backoff after failures stays in backoff unless ``force`` (retry now: the
        backoff ends and its failures are forgotten)."""
        if self.validated is None or key not in self.validated.inventory.tenants:
            return None
        state = self.tenants.setdefault(key, TenantState())
        state.held = None
        if force:
            state.failures = 0
        added = self.queue.add(key, platform=self._platform(key), reason="api trigger", force=force)
        if added is Added.QUEUED:
            log.info("trigger queued", tenant=key, force=force)
        else:
            log.info("trigger merged", tenant=key, into=added.value, force=force)
        return added

    def _driver(self, platform: PlatformConfig, priority: Priority = Priority.CHANGE) -> Driver:
        """The driver of a run at ``priority``: its requests wait for the platform's budget before
        those of lower-priority runs; each pause the platform asks for is counted
        (``replicator_platform_throttled_total``)."""
        driver = default_driver(platform)
        throttled = self.metrics.platform_throttled.labels(platform.identifier)  # exported from 0
        driver.budget = self.budgets[platform.identifier].at(priority, throttled.inc)
        return driver

    async def reconcile(self, key: str) -> TenantResult | None:
        """Run one tenant now (outside the queue), and record the outcome as a worker does."""
        return await runs.reconcile(self, key)

    @staticmethod
    def _lease_retry(ttl: timedelta) -> float:
        return min(LEASE_RETRY, ttl.total_seconds() / 2)

    # --- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._loop = asyncio.get_running_loop()
        if self.freeze_heap:
            tune_collector()
        self._socket = self._bind()  # first: a port in use stops the start before anything runs
        try:
            await self._reload()  # a store that cannot be opened raises; a bad input is reported
            await blocking(self._claim_sqlite)
        except BaseException:
            if self._socket is not None:
                self._socket.close()
            raise
        schedule = self.validated.config.schedule if self.validated else None
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._scheduler.add_job(
            self.resync,
            "interval",
            seconds=schedule.interval if schedule else 600,
            jitter=int(schedule.jitter) if schedule else 30,
            coalesce=True,
            max_instances=1,
            id="resync",
        )
        # Each LDAP connector every ``interval``, the first time now (a new connector: restart).
        for connector in self.validated.config.identity.ldap if self.validated else ():
            self._scheduler.add_job(
                self.sync_ldap,
                "interval",
                args=[connector.name],
                seconds=connector.interval,
                next_run_time=datetime.now(UTC),
                coalesce=True,
                max_instances=1,
                id=f"ldap-sync:{connector.name}",
            )
        users.schedule(self, self._scheduler)
        self._scheduler.start()
        self._tasks = [asyncio.ensure_future(runs.work(self)) for _ in range(self.workers)]
        self._tasks.append(asyncio.ensure_future(self._watch()))
        self._tasks.append(asyncio.ensure_future(self.quotas.keep(self._finished)))
        self._tasks.append(asyncio.ensure_future(sample_loop_lag(self.metrics, self.stopping)))
        if self._socket is not None:
            await self._serve(self._socket)
        log.info("daemon started", replica=self.replica_id, port=self.port, tenants=len(self.tenants))

    def _finished(self) -> bool:
        """Stopping, and no reconcile is left in flight."""
        return self.stopping.is_set() and not self._in_flight

    async def sync_ldap(self, name: str) -> Any:
        """One sync of the LDAP connector ``name`` in a thread, under the lease ``ldap-sync:<name>``
        (one replica at a time); when the stored objects changed, reloads the inventory (in a worker
        thread too) before it returns.
        Returns the SyncResult, or None (not configured, another replica syncs, store error)."""
        from replicator.sources import ldap

        v, store = self.validated, self.store
        connector = next((c for c in v.config.identity.ldap if c.name == name), None) if v else None
        if connector is None or store is None or self.stopping.is_set():
            return None
        try:
            result = await asyncio.to_thread(
                ldap.sync_with_lease, connector, self.config_path, store, self.replica_id
            )
        except Exception as e:  # the store failed under the sync: logged, retried next interval
            log.error("ldap sync could not run", connector=name, error=str(e))
            return None
        if result is not None and result.changed:
            await self.reload()
        return result

    def _bind(self) -> socket.socket | None:
        """The listening socket of ``listen`` (None without one); a DaemonError when it cannot be
        bound (the port is in use, the address is not this host's)."""
        if self.listen is None:
            return None
        host, port = self.listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            return socket.create_server((host, port), family=family)
        except OSError as e:
            raise DaemonError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e

    async def _serve(self, sock: socket.socket) -> None:
        import uvicorn

        from replicator.service.server import build_app

        config = uvicorn.Config(build_app(self), log_config=None, lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._tasks.append(asyncio.ensure_future(self._server.serve(sockets=[sock])))
        while not self._server.started:
            if self._tasks[-1].done():
                self._tasks[-1].result()  # the server could not start: raise why
            await asyncio.sleep(0.02)
        self.port = sock.getsockname()[1]

    async def stop(self) -> None:
        """Stop taking work, let changes in flight finish within the grace period, then exit."""
        if self.stopping.is_set():
            return
        log.info("stopping", in_flight=len(self._in_flight), grace=self.grace)
        self.stopping.set()
        self.queue.close()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._in_flight:
            _, pending = await asyncio.wait(set(self._in_flight), timeout=self.grace)
            for task in pending:
                log.warning("grace period over, abandoning a reconcile")
                task.cancel()
        if self._server is not None:
            self._server.should_exit = True
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._reloads.cancel()
        if self.store is not None:
            if self._sqlite_claim is not None:
                with contextlib.suppress(StoreError):
                    claim = self._sqlite_claim
                    await blocking(self.store.release_lease, SQLITE_REPLICA_LEASE, self._sqlite_holder, claim)
            await blocking(self.store.close)
        log.info("stopped")

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        loop.add_signal_handler(signal.SIGHUP, self._reloads.request)
        await self.start()
        waiters = {asyncio.ensure_future(done.wait()), asyncio.ensure_future(self.exit_requested.wait())}
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            w.cancel()
        await self.stop()
        if self.fatal:
            raise DaemonError(self.fatal)

    async def status(self) -> dict[str, Any]:
        """What ``GET /v1/status`` answers: the last run of each tenant, the identity sources (read
        from the store in a worker thread)."""
        sources = await blocking(source_syncs, self.store)
        return status_doc(self.replica_id, self.config_error, self.queue.depth(), self.tenants, sources)

    def ready(self) -> str | None:
        """None when ready, else why not (blocking: pings the store)."""
        if self.validated is None:
            return self.config_error or "config not loaded"
        if self.store is None:
            return "state store not open"
        try:
            self.store.ping()
        except Exception as e:
            return f"state store unreachable: {type(e).__name__}"
        return None

    def identify(self, secret: str) -> Caller | None:
        """The API caller a bearer secret belongs to: a config key, or a key created with
        ``replicator apikey create`` (looked up by its SHA-256), else None (blocking: reads the
        store)."""
        if self.validated is None:
            return None
        return identify(secret, self.validated.config.api.keys, self.store)
