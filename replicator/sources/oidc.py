"""OIDC login ingestion: ``POST /v1/login/{provider}`` with a provider's ID token creates or updates
the meshUser it names (source ``oidc:<provider>``). The verified token is the credential.

Verification (``Verifier``, usable without the daemon): the provider's discovery document
(``<issuer>/.well-known/openid-configuration``, whose ``issuer`` must equal the configured one)
gives ``jwks_uri``; its keys are cached for ``jwksCacheTtl``. A token whose ``kid`` is not among
them refetches the keys (rotation), at most once per ``jwksMinRefresh``. A token without ``kid``
is accepted only when exactly one key of the algorithm's type is published. The signature is
checked with joserfc for the token's ``alg``, which must be configured and asymmetric (``none``
and HS* are refused, whatever the config says); then ``iss``, ``aud`` (and ``azp`` when several
audiences), ``exp``, ``nbf`` and ``iat`` with ``leeway``. Tokens are never logged or echoed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from replicator.core.config import OIDC_ALGORITHMS, OidcProvider
from replicator.logs import get_logger
from replicator.sources.bodies import BodyError, parse_json, read_body
from replicator.sources.logins import error, write_login

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from replicator.sources.host import SourceHost
    from replicator.sources.stored import LoadedCache
    from state import Store

log = get_logger("replicator.oidc")

MAX_TOKEN_BYTES = 16_384
"""Longer ``idToken`` values are refused before any parsing."""

_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def key_type(alg: str) -> str | None:
    """The JWK ``kty`` an asymmetric algorithm verifies with (None: not an allowed algorithm)."""
    return _KEY_TYPES.get(alg[:2]) if alg in OIDC_ALGORITHMS else None


class TokenRejected(Exception):
    """The token is not accepted; ``reason`` is short and safe to return (it never holds the token)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ProviderUnavailable(Exception):
    """The provider's discovery document or keys could not be fetched or used."""


def _b64json(part: str) -> Any:
    padded = part + "=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def token_header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, unverified (to pick ``alg`` and ``kid``)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenRejected("malformed token")
    try:
        header = _b64json(parts[0])
    except (ValueError, UnicodeError) as e:
        raise TokenRejected("malformed token") from e
    if not isinstance(header, dict):
        raise TokenRejected("malformed token")
    return header


@dataclass
class _Keys:
    keys: list[dict[str, Any]]
    fetched_at: float


@dataclass
class Verifier:
    """Verifies ID tokens of one provider. ``client`` is an ``httpx.AsyncClient`` factory (tests may
    pass one with their own transport settings); ``clock`` gives the current UNIX time."""

    provider: OidcProvider
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    client: Callable[[], httpx.AsyncClient] | None = None
    jwks_fetches: int = 0
    """How many times the keys were fetched (metrics, tests)."""
    _jwks_uri: str | None = None
    _keys: _Keys | None = None
    _last_fetch: float | None = None
    _last_error: str | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _http(self) -> httpx.AsyncClient:
        import httpx

        if self.client is not None:
            return self.client()
        return httpx.AsyncClient(timeout=self.provider.timeout, follow_redirects=False)

    async def _get_json(self, url: str, what: str) -> Any:
        import httpx

        try:
            async with self._http() as http:
                r = await http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as e:
            raise ProviderUnavailable(f"{what} {url}: {type(e).__name__}: {e}") from e
        if r.status_code != 200:
            raise ProviderUnavailable(f"{what} {url}: HTTP {r.status_code}")
        try:
            return r.json()
        except ValueError as e:
            raise ProviderUnavailable(f"{what} {url}: not JSON") from e

    async def _discover(self) -> str:
        if self._jwks_uri is None:
            url = self.provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
            doc = await self._get_json(url, "discovery document")
            if not isinstance(doc, dict):
                raise ProviderUnavailable(f"discovery document {url}: not a JSON object")
            if doc.get("issuer") != self.provider.issuer:
                raise ProviderUnavailable(
                    f"discovery document {url}: issuer {doc.get('issuer')!r} is not the configured "
                    f"{self.provider.issuer!r}"
                )
            jwks_uri = doc.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
                raise ProviderUnavailable(f"discovery document {url}: no usable jwks_uri")
            self._jwks_uri = jwks_uri
        return self._jwks_uri

    async def _fetch_keys(self) -> _Keys:
        uri = await self._discover()
        self.jwks_fetches += 1
        doc = await self._get_json(uri, "keys")
        keys = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(keys, list):
            raise ProviderUnavailable(f"keys {uri}: no 'keys' list")
        usable = [k for k in keys if isinstance(k, dict) and k.get("use", "sig") == "sig"]
        self._keys = _Keys(usable, self.monotonic())
        log.info("oidc keys fetched", provider=self.provider.name, keys=len(usable))
        return self._keys

    async def keys(self, *, refresh: bool = False) -> list[dict[str, Any]]:
        """The provider's signing keys: cached for ``jwksCacheTtl``; ``refresh`` (an unknown
        ``kid``) refetches them. Fetches (and failed fetches) happen at most once per
        ``jwksMinRefresh``, so garbage tokens or an unreachable provider cause no fetch storm.
        When a refresh fails, the keys fetched before stay in use."""
        async with self._lock:
            now = self.monotonic()
            cached = self._keys
            stale = cached is None or now - cached.fetched_at >= self.provider.jwks_cache_ttl
            if cached is not None and not stale and not refresh:
                return cached.keys
            may_fetch = self._last_fetch is None or now - self._last_fetch >= self.provider.jwks_min_refresh
            if not may_fetch:
                if cached is not None:
                    return cached.keys
                raise ProviderUnavailable(self._last_error or "keys not fetched yet")
            self._last_fetch = now
            try:
                keys = (await self._fetch_keys()).keys
            except ProviderUnavailable as e:
                self._last_error = str(e)
                if cached is None:
                    raise
                log.warning(
                    "oidc keys not refreshed, using the cached ones",
                    provider=self.provider.name,
                    error=str(e),
                )
                return cached.keys
            self._last_error = None
            return keys

    async def _pick_key(self, alg: str, kid: Any) -> dict[str, Any]:
        kty = key_type(alg)
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("malformed token")

        def matching(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if kid is not None:
                return [k for k in keys if k.get("kid") == kid]
            return [k for k in keys if k.get("kty") == kty and k.get("alg") in (None, alg)]

        found = matching(await self.keys())
        if not found and kid is not None:
            found = matching(await self.keys(refresh=True))
        if kid is None and len(found) != 1:
            raise TokenRejected("unknown key")  # no kid and not exactly one candidate key
        if not found:
            raise TokenRejected("unknown key")
        key = found[0]
        if key.get("kty") != kty or key.get("alg") not in (None, alg):
            raise TokenRejected("algorithm not allowed")  # the key is for another algorithm
        return key

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or TokenRejected (why) or ProviderUnavailable."""
        from joserfc import jwk, jwt
        from joserfc.errors import BadSignatureError, JoseError

        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRejected("malformed token")
        header = token_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or key_type(alg) is None or alg not in self.provider.algorithms:
            raise TokenRejected("algorithm not allowed")
        if header.get("crit"):
            raise TokenRejected("malformed token")
        jwk_doc = await self._pick_key(alg, header.get("kid"))
        try:
            key = jwk.import_key(jwk_doc)
        except (JoseError, ValueError, TypeError) as e:
            raise ProviderUnavailable(f"provider {self.provider.name}: unusable key: {e}") from e
        try:
            claims = jwt.decode(token, key, algorithms=[alg]).claims
        except BadSignatureError as e:
            raise TokenRejected("bad signature") from e
        except (JoseError, ValueError, TypeError) as e:
            raise TokenRejected("malformed token") from e
        self.check_claims(claims)
        return dict(claims)

    def check_claims(self, claims: Mapping[str, Any]) -> None:
        p = self.provider
        if claims.get("iss") != p.issuer:
            raise TokenRejected("wrong issuer")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(a, str) and a in p.audience for a in audiences):
            raise TokenRejected("wrong audience")
        azp = claims.get("azp")
        if len(audiences) > 1 and azp is not None and azp not in p.audience:
            raise TokenRejected("wrong audience")
        now = self.clock()
        times: dict[str, float] = {}
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name)
            if value is None:
                if name != "nbf":
                    raise TokenRejected(f"missing {name}")
                continue
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TokenRejected(f"malformed {name}")
            times[name] = float(value)
        if now > times["exp"] + p.leeway:
            raise TokenRejected("expired")
        if "nbf" in times and now + p.leeway < times["nbf"]:
            raise TokenRejected("not yet valid")
        if now + p.leeway < times["iat"]:
            raise TokenRejected("not yet valid")  # issued in the future


class MissingClaim(Exception):
    def __init__(self, claim: str, why: str = "missing") -> None:
        self.claim, self.why = claim, why
        super().__init__(f"claim {claim!r}: {why}")


def user_document(provider: OidcProvider, claims: Mapping[str, Any]) -> dict[str, Any]:
    """The meshUser (inventory document) a verified token describes. The ``id`` and ``euid``
    claims are required; username, email and names are taken when present."""
    m = provider.claims

    def text(claim: str, required: bool) -> str | None:
        value = claims.get(claim)
        if value is None or value == "":
            if required:
                raise MissingClaim(claim)
            return None
        if not isinstance(value, str):
            raise MissingClaim(claim, f"is a {type(value).__name__}, expected a string")
        return value

    name = text(m.id, True)
    spec = {
        "username": text(m.username, False),
        "email": text(m.email, False),
        "givenName": text(m.given_name, False),
        "familyName": text(m.family_name, False),
        "euid": text(m.euid, True),
    }
    return {
        "apiVersion": "v1",
        "kind": "meshUser",
        "metadata": {"name": name},
        "spec": {k: v for k, v in spec.items() if v is not None},
    }


async def _read_token(request: Request) -> str | JSONResponse:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await read_body(request, 4 * MAX_TOKEN_BYTES)
    if raw is None:  # refused before reading it whole: the login is unauthenticated
        return error(413, "the body is too large for a login", where="body")
    if ctype == "application/x-www-form-urlencoded":
        from urllib.parse import parse_qs

        try:
            values = parse_qs(raw.decode("ascii"), max_num_fields=20).get("id_token", [])
        except (UnicodeDecodeError, ValueError):
            values = []
        value: Any = values[0] if len(values) == 1 else None
        where = "form field id_token"
    else:
        try:
            body = parse_json(raw)
        except BodyError:
            return error(
                400, 'the body is not JSON (or nests too deeply): send {"idToken": "..."}', where="body"
            )
        value = body.get("idToken") if isinstance(body, dict) else None
        where = "body.idToken"
    if not isinstance(value, str) or not value.strip():
        return error(400, 'no ID token: send {"idToken": "..."} or the form field id_token', where=where)
    return value.strip()


def routes(host: SourceHost) -> list[BaseRoute]:
    verifiers: dict[str, Verifier] = {}

    def verifier(provider: OidcProvider) -> Verifier:
        v = verifiers.get(provider.name)
        if v is None or v.provider != provider:  # new or reconfigured: forget the cached keys
            v = verifiers[provider.name] = Verifier(provider)
        return v

    async def login(request: Request) -> Response:
        name = request.path_params["provider"]
        validated = host.validated
        if validated is None or host.store is None:
            return error(503, "the daemon has no valid configuration yet")
        provider = next((p for p in validated.config.identity.oidc if p.name == name), None)
        if provider is None:
            return error(404, f"unknown OIDC provider {name!r}", where="path")
        token = await _read_token(request)
        if isinstance(token, Response):
            return token
        try:
            claims = await verifier(provider).verify(token)
        except TokenRejected as e:
            log.warning("oidc login refused", provider=name, reason=e.reason)
            return JSONResponse(
                {"error": e.reason},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        except ProviderUnavailable as e:
            log.error("oidc provider unavailable", provider=name, error=str(e))
            return error(503, f"identity provider {name!r} unavailable: {e}")
        from replicator.threads import blocking
        from state import StoreError

        try:
            answer, wrote = await blocking(
                write_user, host.config_path, host.store, provider, claims, host.loaded_cache
            )
        except StoreError as e:
            log.error("oidc login not stored: state store unavailable", provider=name, error=str(e))
            return error(503, "the state store is unavailable; try again")
        if wrote:
            host.objects_changed()  # reload soon: the user's tenants are queued if they changed
        return answer

    return [Route("/v1/login/{provider}", login, methods=["POST"])]


def write_user(
    config_path: Path,
    store: Store,
    provider: OidcProvider,
    claims: Mapping[str, Any],
    cache: LoadedCache | None = None,
) -> tuple[JSONResponse, bool]:
    """Create or update the meshUser of a verified login (blocking: the HTTP handler runs it in a
    thread). Returns the answer and whether anything was written (then the caller reloads)."""
    try:
        doc = user_document(provider, claims)
    except MissingClaim as e:
        why = f"the ID token's claim {e.claim!r} is {e.why}"
        return error(422, why, where=f"token claim {e.claim}"), False
    return write_login(
        config_path, store, f"oidc:{provider.name}", f"oidc login ({provider.name})", doc,
        f"token claim {provider.claims.id}", cache,
    )  # fmt: skip
