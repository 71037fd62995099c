"""The kubernetes client's and urllib3's errors as the contract's types."""

from __future__ import annotations

from typing import TYPE_CHECKING

from platforms.contract import PermanentError, PlatformConfigError, RetryableError

if TYPE_CHECKING:
    from platforms.contract import PlatformError


def translate(what: str, exc: Exception) -> PlatformError | None:
    """The contract error for an exception of the kubernetes client / urllib3, or None."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        if exc.status == 0:  # TLS failures come back as status 0
            return PlatformConfigError(f"kubernetes {what}: {exc.reason}")
        return PermanentError(f"kubernetes {what}: HTTP {exc.status} {exc.reason}")
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and isinstance(
        exc.reason, urllib3.exceptions.SSLError
    ):
        exc = exc.reason
    if isinstance(exc, urllib3.exceptions.SSLError):
        return PlatformConfigError(f"kubernetes {what}: {exc}")
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return RetryableError(f"kubernetes {what}: {exc}")
    return None
