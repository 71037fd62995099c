"""A platform's concurrency limit in the daemon (``schedule.concurrency``), shared by all workers:
a slot that frees goes to a change-driven run before a resync, so that a person just granted
access does not wait behind a sweep of every tenant."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator

from replicator.service.workqueue import Priority


class PriorityGate:
    """At most ``slots`` tenants of one platform run at once; waiters are let in by priority, then
    in the order they came."""

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self.busy = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def enter(self, priority: Priority = Priority.CHANGE) -> AsyncIterator[None]:
        """Hold one slot for the block."""
        if self.busy < self.slots and not self._waiters:
            self.busy += 1
        else:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (int(priority), next(self._order), turn))
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():  # the slot was ours already: pass it on
                    self._release()
                raise
        try:
            yield
        finally:
            self._release()

    def waiting(self) -> int:
        return sum(1 for _, _, turn in self._waiters if not turn.done())

    def _release(self) -> None:
        while self._waiters:
            _, _, turn = heapq.heappop(self._waiters)
            if not turn.done():  # a cancelled waiter's turn is done already: skip it
                turn.set_result(None)  # the slot goes to it: busy stays as it is
                return
        self.busy -= 1
