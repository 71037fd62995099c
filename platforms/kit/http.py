"""HTTP helpers every driver uses the same way: how long a platform asked us to wait, how TLS is
verified."""

from __future__ import annotations

import email.utils
import time
from datetime import UTC
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import ssl


class Headers(Protocol):
    """What the helpers need of a response's headers (httpx, requests, urllib3, httplib2, azure-core
    and kiota headers all have it)."""

    def get(self, key: str, /) -> object: ...


def parse_retry_after(value: object, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds (``"120"``, ``"1.5"``) or an
    HTTP-date (``"Wed, 21 Oct 2015 07:28:00 GMT"``, counted from ``now``, default the clock). None
    when there is no value or it is neither; never negative (a date in the past is 0)."""
    if value is None:
        return None
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    text = text.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _header(headers: Headers | None, name: str) -> object:
    """A header by name, whatever the case the mapping keeps its keys in (None: absent)."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    for key in (name, name.lower()):
        value = get(key)
        if value:
            return value
    return None


def retry_after(headers: Headers | None, *, rate_limit_reset: bool = False) -> float | None:
    """The wait a throttled answer asked for: its ``Retry-After`` (seconds or HTTP-date), or with
    ``rate_limit_reset`` and no Retry-After, ``X-RateLimit-Reset`` (the epoch second the limit
    resets, e.g. Cloud Foundry's rate limiter). None when the answer says neither."""
    value = _header(headers, "Retry-After")
    if value:
        return parse_retry_after(value)
    if not rate_limit_reset:
        return None
    reset = _header(headers, "X-RateLimit-Reset")
    if not reset:
        return None
    try:
        return max(0.0, float(str(reset)) - time.time())
    except ValueError:
        return None


def tls_verify(verify: bool, ca_file: str | None) -> bool | ssl.SSLContext:
    """What an HTTP client's ``verify`` gets: False, True (the system's CAs), or a context that
    trusts ``ca_file``."""
    if verify and ca_file:
        import ssl

        return ssl.create_default_context(cafile=ca_file)
    return verify
