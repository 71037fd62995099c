"""Request budgets: one per platform quota, shared by every worker of the daemon and split between
the replicas that work against that quota at the moment.

* **What a quota belongs to.** Each driver says what its platform's quota belongs to (the AWS
  account's Identity Center instance, the Entra tenant and app, the Cloud Controller and client,
  ...: ``Driver.quota_owner``). Platform entries with the same quota owner share one
  :class:`Budget`, whose rate is the smallest ``schedule.rateLimits`` of those entries (an entry
  without one adds no limit).
* **Across replicas.** On PostgreSQL a replica that sends requests under a quota registers itself
  for the quota owner in the state store (table ``quota_shares``) with a time to live of
  :data:`SHARE_TTL` and renews it every third of that while it keeps sending; each renewal reads
  how many replicas are registered and sets this replica's rate to the configured rate divided by
  that number. A replica with nothing to send for a renewal period deregisters, so one busy
  replica gets the whole quota. On SQLite (one replica) the rate is the configured one.
* **Changes first.** A run's driver enters the budget at the run's priority (:meth:`Budget.at`):
  requests of a change-driven run waiting at the quota go before those of a resync sweep
  (``pacing``).
* **Retry-After** pauses the budget of this replica for every one of its workers (not the others').
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from replicator.logs import get_logger
from replicator.service.pacing import Pacer
from replicator.service.workqueue import Priority
from replicator.threads import blocking
from state import StoreError

if TYPE_CHECKING:
    from platforms.contract import CallBudget
    from replicator.core.config import Config, PlatformConfig
    from replicator.service.metrics import Metrics
    from state import Store

log = get_logger("replicator.service.daemon")

SHARE_TTL = 3.0
"""Seconds a replica's registration for a quota lives unless renewed (every third of it while the
replica sends requests under that quota): how long a killed replica keeps its share."""


class Budget:
    """The request budget of one platform quota (``schedule.rateLimits``, requests per second),
    shared by every worker of this replica that talks to it; a Retry-After pauses it for all of
    them. ``share(n)`` gives this replica ``1/n`` of the rate (``n`` replicas work against the
    quota)."""

    def __init__(self, rate: float | None, owner: str | None = None) -> None:
        self.owner = owner
        """The quota owner (None: a budget made by hand, not shared with other replicas)."""
        self.rate = rate
        """The configured rate: the whole quota (None: no limit)."""
        self.replicas = 1
        self._pacer = Pacer(rate) if rate else None
        self.paused_until = 0.0
        self.in_flight = 0
        """Requests waiting for or holding the budget now."""
        self.used = False
        """A request entered since the last renewal of this replica's share (reset by it)."""
        self.joined = False
        """This replica is registered as working against the quota (see :class:`QuotaShares`)."""
        self.join: Callable[[Budget], Awaitable[None]] | None = None
        """Called before a request when not :attr:`joined` (set when the quota is shared)."""
        self.join_lock = asyncio.Lock()

    @property
    def effective_rate(self) -> float | None:
        """Requests per second this replica may send: the configured rate / the replicas sharing it."""
        return self.rate / self.replicas if self.rate else None

    def configure(self, rate: float | None) -> None:
        """A reloaded config's rate (the share stays)."""
        if rate == self.rate:
            return
        self.rate = rate
        if not rate:
            self._pacer = None
        elif self._pacer is None:
            self._pacer = Pacer(rate / self.replicas)
        else:
            self._pacer.set_rate(rate / self.replicas)

    def share(self, replicas: int) -> None:
        """``replicas`` (at least 1) work against this quota now, this one included."""
        self.replicas = max(1, replicas)
        if self._pacer is not None and self.rate:
            self._pacer.set_rate(self.rate / self.replicas)

    def at(self, priority: Priority, throttled: Callable[[], None] | None = None) -> CallBudget:
        """This budget as the requests of work at ``priority`` enter it: waiting requests of a
        change go before those of a resync. ``throttled`` is called on each pause (a platform's
        answer that said how long to wait): the driver that got it counts it there."""
        return _AtPriority(self, priority, throttled)

    async def __aenter__(self) -> None:
        await self.enter(Priority.CHANGE)

    async def enter(self, priority: Priority) -> None:
        """Wait for this replica's turn to send one request (:meth:`__aenter__` at ``priority``)."""
        self.in_flight += 1
        self.used = True
        try:
            if self.join is not None and not self.joined:
                await self.join(self)
            # A pause can be extended while we sleep: look again after each wait.
            while (wait := self.paused_until - time.monotonic()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
            if self._pacer is not None:
                await self._pacer.acquire(priority)
        except BaseException:
            self.in_flight -= 1
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.in_flight -= 1

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)


class _AtPriority:
    """A :class:`Budget` entered at one priority (see :meth:`Budget.at`)."""

    def __init__(self, budget: Budget, priority: Priority, throttled: Callable[[], None] | None) -> None:
        self.budget, self.priority, self.throttled = budget, priority, throttled

    async def __aenter__(self) -> None:
        await self.budget.enter(self.priority)

    async def __aexit__(self, *exc: object) -> None:
        await self.budget.__aexit__(*exc)

    def pause(self, seconds: float) -> None:
        if self.throttled is not None:
            self.throttled()
        self.budget.pause(seconds)


def quota_owner(platform: PlatformConfig) -> str:
    """What the platform entry's request quota belongs to (its driver says; see ``Driver.quota_owner``)."""
    from platforms.registry import driver_class

    cls = driver_class(platform.type)
    if cls is None:  # validation refuses this earlier
        return f"platform:{platform.identifier}"
    return cls.quota_owner(platform.identifier, platform.options)


class QuotaShares:
    """This replica's budgets, one per quota owner, and its registrations for them in the state
    store (PostgreSQL: shared with the other replicas; SQLite or none: the whole rate)."""

    def __init__(self, replica: str, metrics: Metrics | None = None, ttl: float = SHARE_TTL) -> None:
        self.replica = replica
        self.metrics = metrics
        self.ttl = ttl
        self.store: Store | None = None
        self.budgets: dict[str, Budget] = {}
        """Quota owner -> its budget."""

    @property
    def shared(self) -> bool:
        """Whether other replicas may work against the same quotas (a PostgreSQL store)."""
        return self.store is not None and self.store.engine.dialect.name != "sqlite"

    def configure(
        self, config: Config, previous: Mapping[str, Budget], store: Store | None
    ) -> dict[str, Budget]:
        """Platform identifier -> its budget for ``config``: one per quota owner, at the smallest
        rate of its entries, kept across reloads (with their share). A budget of ``previous`` set
        by hand (without a quota owner) stays its platform's."""
        self.store = store
        owners = {p.identifier: quota_owner(p) for p in config.platforms}
        rates: dict[str, float | None] = {}
        for identifier, owner in owners.items():
            rate = config.schedule.rate_limits.get(identifier)
            known = rates.get(owner)
            rates[owner] = rate if known is None else known if rate is None else min(known, rate)
        budgets: dict[str, Budget] = {}
        for owner, rate in rates.items():
            budget = self.budgets.get(owner) or Budget(rate, owner)
            budget.configure(rate)
            if rate and self.shared:
                budget.join = self._join
            else:
                budget.join = None
            budgets[owner] = budget
            self._gauge(budget)
        # Quotas no entry names any more: given up at the next renewal (no request enters them).
        self.budgets = {**self.budgets, **budgets}
        result: dict[str, Budget] = {}
        for identifier, owner in owners.items():
            kept = previous.get(identifier)
            result[identifier] = kept if kept is not None and kept.owner is None else budgets[owner]
        return result

    async def _join(self, budget: Budget) -> None:
        """Before this replica's first request under a quota it does not work against yet:
        register, and take its share of the rate at once."""
        async with budget.join_lock:
            if budget.joined:
                return
            budget.joined = True  # also on a store failure: the next renewal tries again
            await self._renew(budget)

    async def _renew(self, budget: Budget) -> None:
        assert self.store is not None
        assert budget.owner is not None
        try:
            replicas = await blocking(
                self.store.share_quota, budget.owner, self.replica, timedelta(seconds=self.ttl)
            )
        except StoreError as e:  # keep the last share; the leases stop any change meanwhile
            log.error("cannot renew the quota share", quota_owner=budget.owner, error=str(e))
            return
        if replicas != budget.replicas:
            log.info("quota shared", quota_owner=budget.owner, replicas=replicas, rate=budget.rate)
        budget.share(replicas)
        self._gauge(budget)

    async def _leave(self, budget: Budget) -> None:
        assert self.store is not None
        assert budget.owner is not None
        budget.joined = False
        budget.share(1)
        self._gauge(budget)
        with contextlib.suppress(StoreError):  # it expires on its own
            await blocking(self.store.leave_quota, budget.owner, self.replica)

    async def renew(self) -> None:
        """One round: renew the share of each quota this replica sent requests under since the
        last round (or sends now); give up the others."""
        for budget in list(self.budgets.values()):
            if not budget.joined:
                continue
            busy = budget.in_flight > 0 or budget.used
            budget.used = False
            if busy:
                await self._renew(budget)
            else:
                await self._leave(budget)

    async def keep(self, done: Callable[[], bool]) -> None:
        """Renew every third of the time to live until ``done()`` (the daemon stopped and its
        last reconciles ended: those finishing within the grace period keep their share), then
        deregister from every quota."""
        while not done():
            await asyncio.sleep(self.ttl / 3)
            await self.renew()
        for budget in list(self.budgets.values()):
            if budget.joined:
                await self._leave(budget)

    def _gauge(self, budget: Budget) -> None:
        if self.metrics is None or budget.owner is None or not budget.rate:
            return
        self.metrics.rate_limit.labels(budget.owner).set(budget.effective_rate or 0.0)
        self.metrics.rate_limit_replicas.labels(budget.owner).set(budget.replicas)
