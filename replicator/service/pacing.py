"""The pacer behind a request budget: a leaky bucket whose rate can change while callers wait, and
which lets waiting callers through by priority (a change before a resync), then in arrival order.

Without the priority a person just granted access waits behind every request a resync sweep has
queued at the quota: at 20 requests/s and seven workers' sweep batches waiting, each of the change's
few calls waited seconds (`make bench`: ``daemon_change_latency_p99``)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time

from replicator.service.workqueue import Priority

BURST_SECONDS = 0.5
"""A budget lets through at most this many seconds' worth of its rate at once (after idling). Less
than the second a platform's own token bucket holds: requests let through while they wait for a
worker thread reach the platform together with the next ones, and a burst of a whole second then
overflows its bucket (`make bench`: ``daemon_1_replica_before_429`` 1.1 % with one second, 0 with half)."""


class Pacer:
    """At most ``rate`` acquisitions per second, bursts of at most ``rate * BURST_SECONDS``; waiters
    are let through by :class:`Priority`, then in the order they came. It starts full (no burst),
    so that a replica that just joined a quota paces from its first request."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._level = self._capacity()
        self._at = time.monotonic()
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    def _capacity(self) -> float:
        return max(1.0, self.rate * BURST_SECONDS)

    def _leak(self) -> None:
        now = time.monotonic()
        self._level = max(0.0, self._level - (now - self._at) * self.rate)
        self._at = now

    def _take(self) -> bool:
        self._leak()
        if self._level + 1 <= self._capacity():
            self._level += 1
            return True
        return False

    def set_rate(self, rate: float) -> None:
        self._leak()  # what leaked so far leaked at the old rate
        self.rate = rate
        if self._waiters:  # the next turn comes sooner or later now
            self._dispatch()

    async def acquire(self, priority: Priority = Priority.CHANGE) -> None:
        if not self._waiters and self._take():
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (int(priority), next(self._order), turn))
        if self._timer is None:
            self._dispatch()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # the request was paid for: refund it
                self._leak()
                self._level = max(0.0, self._level - 1)
            raise

    def _dispatch(self) -> None:
        """Let the first waiters through while the bucket has room; wake again when it will."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            turn = self._waiters[0][2]
            if turn.done():  # cancelled while waiting
                heapq.heappop(self._waiters)
                continue
            if not self._take():
                wait = (self._level + 1 - self._capacity()) / self.rate
                self._timer = asyncio.get_running_loop().call_later(wait, self._dispatch)
                return
            heapq.heappop(self._waiters)
            turn.set_result(None)
