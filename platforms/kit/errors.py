"""The error types drivers raise.

The contract's types (``PlatformError`` and its subclasses: what the engine decides on) are
defined in :mod:`platforms.contract` and re-exported here; the subclasses below are what the
drivers' own callers catch (a read that expects "not found", a create that expects "exists").
"""

from __future__ import annotations

from platforms.contract import (
    ForeignObjectError,
    PendingError,
    PermanentError,
    PlatformConfigError,
    PlatformError,
    RetryableError,
    UnknownUserError,
)

__all__ = [
    "ConflictError",
    "ForeignObjectError",
    "NotFoundError",
    "PendingError",
    "PermanentError",
    "PlatformConfigError",
    "PlatformError",
    "RetryableError",
    "UnknownUserError",
    "error_for_status",
]


class NotFoundError(PermanentError):
    """The object does not exist (HTTP 404 or the SDK's equivalent): callers that expect it catch it."""


class ConflictError(PermanentError):
    """The object exists already, or changed since it was read (HTTP 409 or the SDK's equivalent),
    and repeating the same request will not fix it."""


def error_for_status(status: int, message: str, retry_after: float | None = None) -> PlatformError:
    """The contract error for an HTTP error status, as every platform's REST API means it: 404
    :class:`NotFoundError`, 409 :class:`ConflictError`, 429 and 5xx :class:`RetryableError` (after
    ``retry_after`` seconds, when the answer said), 401 :class:`PlatformConfigError` (the
    credentials are refused), anything else :class:`PermanentError`. A driver checks first what its
    platform means differently (a 408, a 403 that is a rate limit, a 409 on an update)."""
    if status == 404:
        return NotFoundError(message)
    if status == 409:
        return ConflictError(message)
    if status == 429 or status >= 500:
        return RetryableError(message, retry_after=retry_after)
    if status == 401:
        return PlatformConfigError(message)
    return PermanentError(message)
