"""botocore's errors as the contract's types."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from platforms.contract import PermanentError, PlatformConfigError, RetryableError
from platforms.kit.errors import ConflictError, NotFoundError
from platforms.kit.http import retry_after

if TYPE_CHECKING:
    from platforms.contract import PlatformError

# Error codes botocore's standard retry mode also treats as throttling.
_THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "InternalServerException",
        "InternalFailure",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_CREDENTIAL_CODES = frozenset(
    {"UnrecognizedClientException", "InvalidClientTokenId", "MissingAuthenticationToken"}
)
# ServiceQuotaExceededException is a real quota (too many groups, ...) unless its message says the
# caller merely has too many requests or operations in flight.
_QUOTA_THROTTLE_WORDS = ("throttl", "rate", "too many", "concurrent", "in progress", "in-progress")


def retry_attempts(response: Any) -> int:
    """How many times botocore repeated the request (``ResponseMetadata.RetryAttempts`` of an
    answer, error answers included; 0 when there was none, e.g. a connection that never answered)."""
    if not isinstance(response, dict):
        return 0
    attempts = (response.get("ResponseMetadata") or {}).get("RetryAttempts") or 0
    return attempts if isinstance(attempts, int) and attempts > 0 else 0


class TransientConflictError(RetryableError):
    """ConflictException that AWS says to retry (concurrent modification, write not propagated)."""


CONFLICTS = (ConflictError, TransientConflictError)
"""Every ConflictException: a create that meets one looks again whether the object is there."""


def translate(operation: str, exc: Exception) -> PlatformError | None:
    """The contract error for a botocore exception, or None when ``exc`` is not one."""
    from botocore import exceptions as bce

    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "") or "Unknown")
        text = str(error.get("Message", "") or "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = (
            f"aws {operation}: {code}"
            + (f" (HTTP {status})" if status else "")
            + (f": {text}" if text else "")
        )
        if code == "ResourceNotFoundException":
            return NotFoundError(message)
        if code == "ConflictException":
            reason = str(exc.response.get("Reason", "") or "")
            # sso-admin's ConflictException means "a previous write has not propagated yet: retry";
            # the identity store says why in Reason (UNIQUENESS_CONSTRAINT_VIOLATION is final).
            if reason == "UNIQUENESS_CONSTRAINT_VIOLATION":
                return ConflictError(message)
            return TransientConflictError(message)
        if code in _THROTTLING_CODES or code in _TRANSIENT_CODES or status == 429 or status >= 500:
            headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders")
            return RetryableError(message, retry_after=retry_after(headers))
        if code == "ServiceQuotaExceededException":
            if any(word in text.lower() for word in _QUOTA_THROTTLE_WORDS):
                return RetryableError(message)
            return PermanentError(message)
        if code in _CREDENTIAL_CODES:
            return PlatformConfigError(message)
        return PermanentError(message)
    if isinstance(exc, bce.SSLError):
        return PermanentError(f"aws {operation}: {exc}")
    if isinstance(exc, bce.HTTPClientError | bce.ConnectionError | bce.CredentialRetrievalError):
        return RetryableError(f"aws {operation}: {exc}")
    if isinstance(
        exc,
        bce.NoCredentialsError
        | bce.PartialCredentialsError
        | bce.ProfileNotFound
        | bce.UnknownCredentialError
        | bce.NoRegionError,
    ):
        return PlatformConfigError(f"aws {operation}: {exc}")
    if isinstance(exc, bce.BotoCoreError):
        return PermanentError(f"aws {operation}: {exc}")
    return None
