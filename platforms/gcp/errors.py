"""Google API error answers as the contract's types."""

from __future__ import annotations

import json
from typing import Any

from platforms.kit import (
    ConflictError,
    NotFoundError,
    PermanentError,
    PlatformConfigError,
    PlatformError,
    RetryableError,
    retry_after,
)


class BadRequestError(PermanentError):
    """HTTP 400 (INVALID_ARGUMENT, "Invalid Input")."""


_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"})


def http_error(operation: str, exc: Any) -> PlatformError:
    """The contract error for a googleapiclient ``HttpError`` (no secret is ever in its text)."""
    status = int(getattr(exc.resp, "status", 0) or 0)
    text = ""
    reasons: set[str] = set()
    try:
        body = json.loads(exc.content)
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            text = " ".join(str(p) for p in (err.get("status"), err.get("message")) if p)
            reasons = {str(e.get("reason")) for e in err.get("errors") or [] if isinstance(e, dict)}
            if err.get("status") == "RESOURCE_EXHAUSTED":
                reasons.add("quotaExceeded")
    except (ValueError, TypeError):
        text = ""
    message = f"gcp {operation}: HTTP {status}" + (f": {text}" if text else "")
    if status == 404:
        return NotFoundError(message)
    if status == 409:
        return ConflictError(message)
    # The Admin SDK answers some rate limits with 403 and a reason instead of 429.
    if status in (408, 429) or status >= 500 or (status == 403 and reasons & _RATE_LIMIT_REASONS):
        return RetryableError(message, retry_after=retry_after(exc.resp))
    if status == 400:
        return BadRequestError(message)
    if status == 401:
        return PlatformConfigError(message)
    return PermanentError(message)
