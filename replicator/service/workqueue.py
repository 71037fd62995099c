"""What the daemon's workers share: the queue of tenants to reconcile (:class:`WorkQueue`), and
what the daemon remembers of each tenant between runs (the request budgets are in ``budgets``)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from replicator.engine.results import TenantResult
    from replicator.service.metrics import Metrics


class Priority(IntEnum):
    """Change-driven work (input change, trigger, retry) goes before the periodic resync."""

    CHANGE = 0
    RESYNC = 1


class Added(StrEnum):
    """What :meth:`WorkQueue.add` did with a key."""

    QUEUED = "queued"
    """It waits now (it did not before)."""
    WAITING = "waiting"
    """It was waiting already (promoted to change priority when it waited at resync priority)."""
    RUNNING = "running"
    """It runs now: it runs once more afterwards, however many times it is added meanwhile."""
    BACKOFF = "backoff"
    """It waits out its backoff after failures: it runs when the backoff ends (``force`` resets it)."""


REASONS = ("startup", "input change", "api trigger", "resync", "retry", "requeue")
"""Why a key was queued: the daemon started (every tenant, at resync priority); its inventory,
config or stored objects changed; the trigger API; the periodic or an operator's full resync; the
backoff after a failure ended; the platform asked to come back later or another run held the
tenant."""


@dataclass(frozen=True)
class Item:
    """A key handed to a worker, with why, at which priority and how long it waited."""

    key: str
    reason: str
    waited: float
    priority: Priority = Priority.CHANGE


@dataclass
class _Entry:
    platform: str
    priority: Priority
    reason: str
    since: float
    force: bool = False


class WorkQueue:
    """The daemon's queue of tenant keys, with the semantics of client-go's workqueue:

    * a key waits at most once, and is never handed to two workers at once: a key added while it
      runs is marked dirty and is handed out once more after :meth:`done`, however often it was added;
    * two priorities: change-driven keys before the periodic resync; a waiting resync key that
      gets a change is promoted; resync keys are handed out round-robin across platforms, in
      batches of one platform's keys (:meth:`take`), so that a worker reads what the platform
      lets it read in bulk once for the batch; at most ``resync_slots`` batches run at once, so
      that a worker is always free for a change;
    * per-key backoff after failures (:meth:`retry`): ``base * 2**(failures-1)``, jittered by
      ``jitter`` either way, capped at ``cap``; adding a key in backoff leaves it in backoff, only
      ``force`` (an operator's "retry now", an input change) ends it and forgets the failures.
    """

    def __init__(
        self, base: float = 5.0, cap: float = 600.0, jitter: float = 0.2, metrics: Metrics | None = None
    ) -> None:
        self.base, self.cap, self.jitter, self.metrics = base, cap, jitter, metrics
        if metrics is not None:  # read when scraped
            metrics.workqueue_unfinished.set_function(self.unfinished_work)
            metrics.workqueue_longest.set_function(self.longest_running)
        self._change: deque[str] = deque()
        self._resync: OrderedDict[str, deque[str]] = OrderedDict()
        self._waiting: dict[str, _Entry] = {}
        self._processing: dict[str, float] = {}
        self._dirty: dict[str, _Entry] = {}
        self._timers: dict[str, tuple[asyncio.TimerHandle, bool]] = {}
        """Delayed adds: (timer, is a backoff)."""
        self._failures: dict[str, int] = {}
        self._batch_of: dict[str, int] = {}
        """Keys of a running resync batch -> the batch."""
        self._batches: dict[int, int] = {}
        """Running resync batches -> their keys not done yet."""
        self._next_batch = 0
        self._wakeup = asyncio.Event()
        """Set when a key may be handed out (one was pushed, a resync batch ended)."""

    # --- adding --------------------------------------------------------------------------------

    def add(
        self,
        key: str,
        *,
        platform: str = "",
        priority: Priority = Priority.CHANGE,
        reason: str = "input change",
        force: bool = False,
    ) -> Added:
        timer = self._timers.get(key)
        if timer is not None:
            if timer[1] and not force:
                return Added.BACKOFF
            self._timers.pop(key)[0].cancel()
        if force:
            self._failures.pop(key, None)
        entry = _Entry(platform, priority, reason, time.monotonic(), force)
        if key in self._processing:
            dirty = self._dirty.get(key)
            if dirty is None:
                self._dirty[key] = entry
                self._count_add(reason)
            elif priority < dirty.priority or (force and not dirty.force):
                reason = reason if priority < dirty.priority else dirty.reason
                self._dirty[key] = _Entry(
                    platform, min(priority, dirty.priority), reason, dirty.since, force or dirty.force
                )
            return Added.RUNNING
        waiting = self._waiting.get(key)
        if waiting is not None:
            if priority < waiting.priority:  # promote
                self._resync[waiting.platform].remove(key)
                if not self._resync[waiting.platform]:
                    del self._resync[waiting.platform]
                waiting.priority, waiting.reason = priority, reason
                self._change.append(key)
                self._gauge()
            return Added.WAITING
        self._push(key, entry)
        self._count_add(reason)
        return Added.QUEUED

    def add_after(self, key: str, delay: float, *, platform: str = "", reason: str = "requeue") -> None:
        """Add ``key`` (at change priority) after ``delay`` seconds, unless it waits or is
        already to be added later."""
        if key in self._waiting or key in self._timers or key in self._dirty:
            return
        self._later(key, delay, platform, reason, backoff=False)

    def retry(self, key: str, *, platform: str = "") -> float:
        """The key failed: add it again after its backoff, which grows with each failure until
        :meth:`forget`. A non-forced add while it runs is folded into this backoff. Returns the delay."""
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        spread = random.uniform(1 - self.jitter, 1 + self.jitter)
        delay: float = min(self.cap, self.base * 2.0 ** min(failures - 1, 64) * spread)
        dirty = self._dirty.get(key)
        if dirty is not None and not dirty.force:
            del self._dirty[key]
        if dirty is None or not dirty.force:
            timer = self._timers.pop(key, None)
            if timer is not None:
                timer[0].cancel()
            self._later(key, delay, platform, "retry", backoff=True)
        if self.metrics is not None:
            self.metrics.workqueue_retries.inc()
        return delay

    def forget(self, key: str) -> None:
        """The key succeeded: its next failure starts the backoff afresh."""
        self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

    def in_backoff(self, key: str) -> bool:
        timer = self._timers.get(key)
        return timer is not None and timer[1]

    # --- taking --------------------------------------------------------------------------------

    async def get(self) -> Item:
        """The next key (change priority first); it runs until :meth:`done`."""
        return (await self.take())[0]

    async def take(self, *, batch: int = 1, resync_slots: int | None = None) -> list[Item]:
        """The next key at change priority, else up to ``batch`` resync keys of one platform (the
        next platform in turn), once fewer than ``resync_slots`` resync batches run. Each key runs
        until :meth:`done`."""
        while not (
            self._change or (self._resync and (resync_slots is None or len(self._batches) < resync_slots))
        ):
            self._wakeup.clear()
            await self._wakeup.wait()
        if self._change:
            keys = [self._change.popleft()]
        else:
            platform, waiting = next(iter(self._resync.items()))
            keys = [waiting.popleft() for _ in range(min(max(1, batch), len(waiting)))]
            if waiting:
                self._resync.move_to_end(platform)  # round-robin across platforms
            else:
                del self._resync[platform]
            self._next_batch += 1
            self._batches[self._next_batch] = len(keys)
            self._batch_of.update(dict.fromkeys(keys, self._next_batch))
        now = time.monotonic()
        items = []
        for key in keys:
            entry = self._waiting.pop(key)
            self._processing[key] = now
            if self.metrics is not None:
                self.metrics.workqueue_queue_seconds.observe(now - entry.since)
            items.append(Item(key, entry.reason, now - entry.since, entry.priority))
        self._gauge()
        return items

    def done(self, key: str) -> None:
        """The key's run ended: a key added meanwhile waits again now."""
        started = self._processing.pop(key, None)
        if started is not None and self.metrics is not None:
            self.metrics.workqueue_work_seconds.observe(time.monotonic() - started)
        batch = self._batch_of.pop(key, None)
        if batch is not None:
            self._batches[batch] -= 1
            if not self._batches[batch]:  # the batch ended: its slot is free
                del self._batches[batch]
                self._wakeup.set()
        entry = self._dirty.pop(key, None)
        if entry is not None:
            self._push(key, entry)

    def depth(self, priority: Priority | None = None) -> int:
        """Keys waiting (at ``priority``, or at all); keys that run, or wait for a delay, do not count."""
        if priority is None:
            return len(self._waiting)
        return sum(1 for e in self._waiting.values() if e.priority is priority)

    def running(self, key: str) -> bool:
        return key in self._processing

    def dirty(self, key: str, priority: Priority = Priority.RESYNC) -> bool:
        """The key runs and was added since, at ``priority`` or higher: it runs once more after
        :meth:`done`."""
        entry = self._dirty.get(key)
        return entry is not None and entry.priority <= priority

    def unfinished_work(self) -> float:
        """Seconds of work in progress not yet done: the sum of how long each running key has run
        (client-go's unfinished work; a value that only grows means stuck workers)."""
        now = time.monotonic()
        return sum(now - started for started in self._processing.values())

    def longest_running(self) -> float:
        """Seconds the longest-running key has run so far."""
        now = time.monotonic()
        return max((now - started for started in self._processing.values()), default=0.0)

    def close(self) -> None:
        for timer, _ in self._timers.values():
            timer.cancel()
        self._timers.clear()

    # --- inside --------------------------------------------------------------------------------

    def _push(self, key: str, entry: _Entry) -> None:
        self._waiting[key] = entry
        if entry.priority is Priority.CHANGE:
            self._change.append(key)
        else:
            self._resync.setdefault(entry.platform, deque()).append(key)
        self._wakeup.set()
        self._gauge()

    def _later(self, key: str, delay: float, platform: str, reason: str, *, backoff: bool) -> None:
        def fire() -> None:
            self._timers.pop(key, None)
            self.add(key, platform=platform, reason=reason)

        self._timers[key] = (asyncio.get_running_loop().call_later(delay, fire), backoff)

    def _count_add(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.workqueue_adds.labels(reason).inc()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._waiting))
            for p in Priority:
                self.metrics.workqueue_depth.labels(p.name.lower()).set(self.depth(p))


@dataclass
class TenantState:
    last: TenantResult | None = None
    last_finished: datetime | None = None
    last_success: datetime | None = None
    failures: int = 0
    held: str | None = None
    """Why the tenant waits for its input to change or for an operator (deletion guard)."""
    left_to_other_run: datetime | None = None
    """When a resync found the tenant's lease held by another run (another replica): the resync
    is done if that run converged the tenant after this."""
