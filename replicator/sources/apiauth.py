"""API keys of the daemon's HTTP API: from the config (``api.keys``, secrets by reference) or
created with ``replicator apikey create`` (only their SHA-256 is stored). Sent as
``Authorization: Bearer <secret>``; a missing or unknown key is 401, a key without the scope 403.
No key value is ever logged."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from replicator.logs import get_logger
from replicator.threads import blocking
from state import StoreError

if TYPE_CHECKING:
    from replicator.core.config import ApiKey
    from state import Store

log = get_logger("replicator.sources.apiauth")

SCOPES = ("read", "write", "admin")
KEY_PREFIX = "rpk_"
"""Prefix of generated keys, so secret scanners recognise them."""


@dataclass(frozen=True)
class Caller:
    """Who called: the key's name and its scopes (``admin`` implies ``write`` and ``read``)."""

    name: str
    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes or (scope == "read" and "write" in self.scopes)


def new_secret() -> tuple[str, str]:
    """A new key: (secret to show once, its SHA-256 to store)."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return secret, hash_secret(secret)


def hash_secret(secret: str) -> str:
    # The secret is 256 random bits: a fast hash is as safe as a slow one (no dictionary to try).
    return hashlib.sha256(secret.encode()).hexdigest()


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else ""


async def authorize(
    request: Request, scope: str, identify: Callable[[str], Caller | None]
) -> Caller | Response:
    """The caller, or the 401/403 answer to send. ``identify`` runs in a worker thread (it may read
    the state store)."""
    secret = bearer(request)
    caller = await blocking(identify, secret) if secret else None
    if caller is None:
        refused(request, 401, "missing API key" if not secret else "unknown API key", scope)
        return JSONResponse(
            {"error": "missing or unknown API key"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )
    if not caller.may(scope):
        refused(request, 403, "the key lacks the scope", scope, caller=caller.name)
        return JSONResponse({"error": f"this key lacks the {scope!r} scope"}, status_code=403)
    return caller


def refused(request: Request, status: int, why: str, scope: str, caller: str | None = None) -> None:
    """Log a refused request: who (the key's name, never its value), what, from where."""
    log.warning(
        "request refused",
        status=status,
        reason=why,
        scope=scope,
        caller=caller,
        method=request.method,
        path=request.url.path,
        client=request.client.host if request.client else None,
    )


def identify(secret: str, keys: Iterable[ApiKey], store: Store | None) -> Caller | None:
    """The API caller a bearer secret belongs to: a key of the config file, or a key created with
    ``replicator apikey create`` (looked up in the store by its SHA-256), else None."""
    for key in keys:
        if key.matches(secret):
            return Caller(key.name, frozenset(key.scopes))
    if store is not None:
        try:
            record = store.api_key_by_hash(hash_secret(secret))
            if record is not None:
                store.touch_api_key(record.name)
                return Caller(record.name, frozenset(record.scopes))
        except StoreError as e:
            log.error("cannot check an API key against the state store", error=str(e))
    return None
