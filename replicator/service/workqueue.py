"""What the daemon's workers share: one request budget per platform, the queue of tenants to
reconcile, and what the daemon remembers of each tenant between runs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from replicator.engine.results import TenantResult


class Budget:
    """One platform's request budget (``schedule.rateLimits``, requests per second), shared by every
    worker; a Retry-After pauses it for everyone."""

    def __init__(self, rate: float | None) -> None:
        from aiolimiter import AsyncLimiter

        self.limiter = AsyncLimiter(rate, 1.0) if rate else None
        self.paused_until = 0.0

    async def __aenter__(self) -> None:
        # A pause can be extended while we sleep: look again after each wait.
        while (wait := self.paused_until - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait)
        if self.limiter is not None:
            await self.limiter.acquire()

    async def __aexit__(self, *exc: object) -> None:
        return None

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)


class TenantQueue:
    """FIFO of tenant keys where a key waits at most once; delayed re-queues for backoff."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._waiting: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def put(self, key: str) -> bool:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._waiting:
            return False
        self._waiting.add(key)
        self._queue.put_nowait(key)
        return True

    def put_later(self, key: str, delay: float) -> None:
        if key in self._waiting or key in self._timers:
            return
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.put(key)

    async def get(self) -> str:
        key = await self._queue.get()
        self._waiting.discard(key)
        return key

    def depth(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


@dataclass
class TenantState:
    last: TenantResult | None = None
    last_finished: datetime | None = None
    last_success: datetime | None = None
    failures: int = 0
    held: str | None = None
    """Why the tenant waits for its input to change or for an operator (deletion guard)."""
