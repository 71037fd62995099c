"""A daemon that keeps every driver it makes, for tests and benches that count a run's requests."""

from __future__ import annotations

from typing import Any

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
