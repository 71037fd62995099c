"""Graph (kiota/httpx) and ARM (azure-core) errors as the contract's types."""

from __future__ import annotations

from typing import TYPE_CHECKING

from platforms.contract import PermanentError, PlatformConfigError, RetryableError
from platforms.kit.errors import ConflictError, NotFoundError, error_for_status
from platforms.kit.http import Headers, retry_after

if TYPE_CHECKING:
    from platforms.contract import PlatformError


class UnknownPrincipalError(NotFoundError):
    """ARM's PrincipalNotFound: Entra ID has not replicated a new group to ARM yet."""


class UnknownReferenceError(NotFoundError):
    """Graph's 400 for a reference to an object it does not know (``members/$ref``: "One or more
    added object references do not exist"): a just-created member a replica does not know yet."""


class ThrottledError(RetryableError):
    """429/503: waited out and repeated by ``_request`` when the wait is short."""


def graph_error(operation: str, exc: Exception) -> PlatformError | None:
    """The contract error for a kiota/msgraph/httpx/azure-identity exception, or None."""
    import httpx
    from azure.core.exceptions import ClientAuthenticationError
    from kiota_abstractions.api_error import APIError

    if isinstance(exc, APIError):
        status = int(exc.response_status_code or 0)
        code, text = "", ""
        error = getattr(exc, "error", None)
        if error is not None:
            code = str(getattr(error, "code", "") or "")
            text = str(getattr(error, "message", "") or "")
        text = text or str(exc.message or "")
        message = f"azure graph {operation}: HTTP {status}" + (f" {code}" if code else "")
        message += f": {text}" if text else ""
        if status == 400 and "already exist" in text:
            return ConflictError(message)
        if status == 400 and "do not exist" in text:
            return UnknownReferenceError(message)
        return _by_status(status, message, exc.response_headers)
    if isinstance(exc, ClientAuthenticationError):
        return PlatformConfigError(f"azure {operation}: cannot sign in: {first_line(exc)}")
    if isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError):
        return RetryableError(f"azure graph {operation}: {type(exc).__name__}: {exc}")
    if isinstance(exc, httpx.HTTPError):
        return PermanentError(f"azure graph {operation}: {type(exc).__name__}: {exc}")
    return azure_core_error("graph", operation, exc)


def arm_error(operation: str, exc: Exception) -> PlatformError | None:
    """The contract error for an azure-core exception raised by the ARM client, or None."""
    return azure_core_error("arm", operation, exc)


def azure_core_error(api: str, operation: str, exc: Exception) -> PlatformError | None:
    from azure.core import exceptions as ace

    if isinstance(exc, ace.ClientAuthenticationError) and getattr(exc, "status_code", None) is None:
        return PlatformConfigError(f"azure {operation}: cannot sign in: {first_line(exc)}")
    if isinstance(exc, ace.HttpResponseError):
        status = int(exc.status_code or 0)
        code = ""
        if exc.error is not None:
            code = str(exc.error.code or "")
        text = first_line(exc.error.message if exc.error is not None and exc.error.message else exc)
        message = f"azure {api} {operation}: HTTP {status}" + (f" {code}" if code else "") + f": {text}"
        if code == "PrincipalNotFound" and status not in (429, 503):
            return UnknownPrincipalError(message)
        return _by_status(status, message, getattr(exc.response, "headers", None))
    if isinstance(exc, ace.ServiceRequestError | ace.ServiceResponseError):
        return RetryableError(f"azure {api} {operation}: {first_line(exc)}")
    if isinstance(exc, ace.AzureError):
        return PermanentError(f"azure {api} {operation}: {first_line(exc)}")
    return None


def _by_status(status: int, message: str, headers: Headers | None) -> PlatformError:
    """Graph and ARM alike: 429 and 503 are throttling (waited out by ``_request`` when the wait is
    short), 408 is retryable, the rest means what it means everywhere."""
    wait = retry_after(headers)
    if status in (429, 503):
        return ThrottledError(message, retry_after=wait)
    if status == 408:
        return RetryableError(message, retry_after=wait)
    return error_for_status(status, message, wait)


def first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
