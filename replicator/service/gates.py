"""A platform's concurrency limit in the daemon (``schedule.concurrency``), shared by all workers:
a slot that frees goes to a change-driven run before a resync, so that a person just granted
access does not wait behind a sweep of every tenant."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable

from replicator.service.workqueue import Priority


class PriorityGate:
    """At most ``slots`` tenants of one platform run at once; waiters are let in by priority, then
    in the order they came. A waiter's priority may rise while it waits (``urgent``: a tenant of
    a sweep that changed meanwhile goes first)."""

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self.busy = 0
        self._waiters: list[tuple[Priority, int, Callable[[], bool] | None, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def enter(
        self, priority: Priority = Priority.CHANGE, urgent: Callable[[], bool] | None = None
    ) -> AsyncIterator[None]:
        """Hold one slot for the block; ``urgent()`` True while waiting lets it in as a change."""
        if self.busy < self.slots and not self._waiters:
            self.busy += 1
        else:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((priority, next(self._order), urgent, turn))
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
        return sum(1 for *_, turn in self._waiters if not turn.done())

    def _release(self) -> None:
        self._waiters = [w for w in self._waiters if not w[3].done()]  # cancelled waiters
        if not self._waiters:
            self.busy -= 1
            return

        def rank(w: tuple[Priority, int, Callable[[], bool] | None, asyncio.Future[None]]) -> tuple[int, int]:
            priority, order, urgent, _ = w
            return (Priority.CHANGE if urgent is not None and urgent() else priority, order)

        chosen = min(self._waiters, key=rank)
        self._waiters.remove(chosen)
        chosen[3].set_result(None)  # the slot goes to it: busy stays as it is
