"""Daemons for tests and benches: one that keeps every driver it makes (to count a run's
requests), one run in a thread with its own event loop, and the wait for a daemon process to be
ready."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from platforms.contract import Driver
from replicator.core.config import PlatformConfig
from replicator.service.daemon import Daemon
from replicator.service.workqueue import Priority


class DriverWatchingDaemon(Daemon):
    """:class:`Daemon` whose ``drivers`` lists every driver its runs made, in order (one per engine
    run and platform: a resync batch shares one)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.drivers: list[Driver] = []

    def _driver(self, platform: PlatformConfig, priority: Priority = Priority.CHANGE) -> Driver:
        driver = super()._driver(platform, priority)
        self.drivers.append(driver)
        return driver

    def calls(self) -> dict[str, Any]:
        """Requests by operation, summed over the drivers kept so far."""
        total: dict[str, int] = {}
        for driver in self.drivers:
            for op, n in getattr(driver, "api_calls", {}).items():
                total[op] = total.get(op, 0) + n
        return total


@contextlib.contextmanager
def daemon_in_thread(
    config_path: Path, *, watch_interval: float, name: str
) -> Iterator[tuple[Daemon, asyncio.AbstractEventLoop]]:
    """A daemon serving on a free port of 127.0.0.1, in a thread ``name`` with its own event loop,
    its config valid; stopped when the block ends. Yields it and its loop."""
    daemon = Daemon(
        config_path=config_path, listen=("127.0.0.1", 0), workers=1, watch_interval=watch_interval, grace=2
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(daemon.start(), loop).result(60)
        assert daemon.validated is not None, daemon.config_error
        yield daemon, loop
    finally:
        asyncio.run_coroutine_threadsafe(daemon.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def wait_ready(proc: subprocess.Popen[Any], port: int, seconds: float, log: Callable[[], str]) -> None:
    """Until the daemon ``proc`` answers /readyz on ``port`` (at most ``seconds``); if it dies
    first, fail with what ``log`` returns."""
    deadline = time.monotonic() + seconds
    while True:
        assert proc.poll() is None, log()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the daemon did not get ready"
        time.sleep(0.1)
