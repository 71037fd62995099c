"""The backends' fixtures, reused from the drivers' integration tests (one server per session where
they have a session fixture): the conformance adapters ask for them by name."""

from __future__ import annotations

from tests.integration.conftest import moto, moto_server
from tests.integration.test_azure_driver import azure, azure_server
from tests.integration.test_cloudfoundry_driver import cf_server
from tests.integration.test_gcp_driver import gcp_session

__all__ = ["azure", "azure_server", "cf_server", "gcp_session", "moto", "moto_server"]
