"""The moto fixture (the session's moto server from tests/support/sessions.py, reset), the SCIM
tests' ``served`` daemon (tests/support/scim_served.py), and the helpers the driver tests share:
``ROOT``, ``marker``, ``RecordingBudget``, ``closing_drivers`` (the drivers a test made, closed
after it; a module's ``make_driver`` fixture uses it, and ``driver`` is one with the default
options) and ``assert_import_loads_no_sdk``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from platforms.contract import Driver, TenantRef
from platforms.kit import OWNER_MARKER
from tests.support.moto_aws import ACCESS_KEY_ID, SECRET_ACCESS_KEY, MotoAws
from tests.support.scim_served import served  # noqa: F401 - the SCIM tests' fixture

ROOT = Path(__file__).resolve().parents[2]
DriverT = TypeVar("DriverT", bound=Driver)


@pytest.fixture
def moto(moto_server: MotoAws, monkeypatch: pytest.MonkeyPatch) -> MotoAws:
    """The session's moto server, reset, with dummy credentials in the AWS credential chain."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    moto_server.reset()
    return moto_server


# --- shared by the driver tests ----------------------------------------------------------------


def marker(tenant: TenantRef) -> str:
    """The description marker of a group the driver made for ``tenant``."""
    return f"{OWNER_MARKER} tenant={tenant.key}"


class RecordingBudget:
    """A CallBudget that lets every call through: it counts the calls that entered it and records
    the pauses a driver asked for."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.entered = 0

    async def __aenter__(self) -> None:
        self.entered += 1

    async def __aexit__(self, *exc: object) -> None:
        return None

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)


@pytest.fixture
def driver(make_driver: Callable[[], Driver]) -> Driver:
    """A driver with the default options, from the test module's own ``make_driver`` fixture."""
    return make_driver()


@asynccontextmanager
async def closing_drivers(build: Callable[..., DriverT]) -> AsyncIterator[Callable[..., DriverT]]:
    """A maker of drivers (``build(**options)``) for a ``make_driver`` fixture: every driver it
    made is closed when the block ends."""
    drivers: list[DriverT] = []

    def make(**options: Any) -> DriverT:
        driver = build(**options)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        await driver.close()


def assert_import_loads_no_sdk(imports: str, platform_type: str, sdk: tuple[str, ...]) -> None:
    """In a fresh interpreter, ``import imports`` and the registry's driver class for
    ``platform_type`` load no module of the packages ``sdk`` (a driver loads its SDK when used)."""
    code = (
        f"import sys, {imports}\n"
        f"platforms.registry.driver_class({platform_type!r})\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {sdk!r})\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
