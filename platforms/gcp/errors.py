"""Google API error answers as the contract's types."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from platforms.contract import PermanentError, RetryableError
from platforms.kit.errors import error_for_status
from platforms.kit.http import retry_after

if TYPE_CHECKING:
    from platforms.contract import PlatformError


class BadRequestError(PermanentError):
    """HTTP 400 (INVALID_ARGUMENT, "Invalid Input")."""


class ForbiddenError(PermanentError):
    """HTTP 403 that is no rate limit: a missing permission, or (``users.get``) an email outside the
    customer's domains, which the Admin SDK answers the same way."""


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
    if status == 400:
        return BadRequestError(message)
    # The Admin SDK answers some rate limits with 403 and a reason instead of 429.
    if status == 408 or (status == 403 and reasons & _RATE_LIMIT_REASONS):
        return RetryableError(message, retry_after=retry_after(exc.resp))
    if status == 403:
        return ForbiddenError(message)
    return error_for_status(status, message, retry_after(exc.resp))
