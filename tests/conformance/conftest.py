"""The backends' fixtures, reused from the drivers' integration tests: the conformance adapters ask
for them by name. The session-wide servers they build on (moto, Azure, GCP) are registered once
for the whole suite in ``tests/conftest.py``."""

from __future__ import annotations

from tests.integration.conftest import moto
from tests.integration.test_azure_driver import azure
from tests.integration.test_cloudfoundry_driver import cf_server

__all__ = ["azure", "cf_server", "moto"]
