"""The error types drivers raise.

The contract's types (``PlatformError`` and its subclasses: what the engine decides on) are
defined in :mod:`platforms.contract` and re-exported here; the subclasses below are what the
drivers' own callers catch (a read that expects "not found", a create that expects "exists").
"""

from __future__ import annotations

from platforms.contract import (
    ForeignObjectError,
    PermanentError,
    PlatformConfigError,
    PlatformError,
    RetryableError,
)

__all__ = [
    "ConflictError",
    "ForeignObjectError",
    "NotFoundError",
    "PermanentError",
    "PlatformConfigError",
    "PlatformError",
    "RetryableError",
]


class NotFoundError(PermanentError):
    """The object does not exist (HTTP 404 or the SDK's equivalent): callers that expect it catch it."""


class ConflictError(PermanentError):
    """The object exists already, or changed since it was read (HTTP 409 or the SDK's equivalent),
    and repeating the same request will not fix it."""
