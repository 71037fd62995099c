"""Keystone's answers and keystoneauth/openstacksdk's errors as the contract's types."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from platforms.contract import PermanentError, PlatformConfigError, RetryableError
from platforms.kit.errors import error_for_status
from platforms.kit.http import parse_retry_after

if TYPE_CHECKING:
    from platforms.contract import PlatformError


def http_error(operation: str, status: int, body: Any, wait: float | None) -> PlatformError:
    """The contract error for an HTTP error answer of Keystone."""
    text = ""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            text = str(err.get("message") or "")
    message = f"openstack {operation}: HTTP {status}" + (f": {text}" if text else "")
    return error_for_status(status, message, wait)


def translate(operation: str, exc: Exception) -> PlatformError | None:
    """The contract error for a keystoneauth/openstacksdk exception, or None when ``exc`` is not one."""
    from keystoneauth1 import exceptions as ksa
    from openstack import exceptions as sdk

    if isinstance(exc, ksa.HttpError):
        status = int(getattr(exc, "http_status", 0) or 0)
        return http_error(operation, status, None, parse_retry_after(getattr(exc, "retry_after", None)))
    if isinstance(exc, ksa.SSLError):
        return PermanentError(f"openstack {operation}: TLS: {exc}")
    if isinstance(exc, ksa.ConnectionError | ksa.ConnectTimeout):
        return RetryableError(f"openstack {operation}: cannot reach Keystone: {exc}")
    if isinstance(exc, ksa.RetriableConnectionFailure):
        return RetryableError(f"openstack {operation}: {exc}")
    if isinstance(exc, ksa.AuthorizationFailure | ksa.MissingAuthPlugin | ksa.MissingRequiredOptions):
        return PlatformConfigError(f"openstack {operation}: cannot log in: {type(exc).__name__}")
    if isinstance(exc, ksa.NoMatchingPlugin | ksa.EndpointNotFound | ksa.EmptyCatalog | ksa.DiscoveryFailure):
        return PlatformConfigError(f"openstack {operation}: {exc}")
    if isinstance(exc, sdk.ConfigException):
        return PlatformConfigError(f"openstack {operation}: {exc}")
    if isinstance(exc, ksa.ClientException | sdk.SDKException):
        return PermanentError(f"openstack {operation}: {exc}")
    return None
