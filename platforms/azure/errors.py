"""Graph (kiota/httpx) and ARM (azure-core) errors as the contract's types."""

from __future__ import annotations

from platforms.kit import (
    ConflictError,
    NotFoundError,
    PermanentError,
    PlatformConfigError,
    PlatformError,
    RetryableError,
    retry_after,
)


class UnknownPrincipalError(NotFoundError):
    """ARM's PrincipalNotFound: Entra ID has not replicated a new group to ARM yet."""


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
        if status in (429, 503):
            return ThrottledError(message, retry_after=retry_after(exc.response_headers))
        if status == 404:
            return NotFoundError(message)
        if status == 409 or (status == 400 and "already exist" in text):
            return ConflictError(message)
        if status >= 500 or status == 408:
            return RetryableError(message, retry_after=retry_after(exc.response_headers))
        if status == 401:
            return PlatformConfigError(message)
        return PermanentError(message)
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
        headers = getattr(exc.response, "headers", None)
        if status in (429, 503):
            return ThrottledError(message, retry_after=retry_after(headers))
        if code == "PrincipalNotFound":
            return UnknownPrincipalError(message)
        if status == 404:
            return NotFoundError(message)
        if status == 409:
            return ConflictError(message)
        if status >= 500 or status == 408:
            return RetryableError(message, retry_after=retry_after(headers))
        if status == 401:
            return PlatformConfigError(message)
        return PermanentError(message)
    if isinstance(exc, ace.ServiceRequestError | ace.ServiceResponseError):
        return RetryableError(f"azure {api} {operation}: {first_line(exc)}")
    if isinstance(exc, ace.AzureError):
        return PermanentError(f"azure {api} {operation}: {first_line(exc)}")
    return None


def first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
