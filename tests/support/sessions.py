"""The backends that live for the whole test session, defined once and registered once (by
``tests/conftest.py``), so that every directory that uses them (integration, conformance, e2e,
unit) shares one server. A fixture imported into several conftest files or test modules is a
separate fixture in each, and a session-scoped one then starts its server once per place."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.azure_server import AzureServer
from tests.support.gcp_server import GcpServer
from tests.support.moto_aws import MotoAws


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoAws]:
    """One moto server for the whole session (state is shared: prefer ``moto``)."""
    with MotoAws() as server:
        yield server


@pytest.fixture(scope="session")
def azure_server() -> Iterator[AzureServer]:
    with AzureServer() as server:
        yield server


@pytest.fixture(scope="session")
def gcp_session() -> Iterator[GcpServer]:
    with GcpServer() as server:
        yield server
