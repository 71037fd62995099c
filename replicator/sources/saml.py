"""SAML 2.0 login (service provider): an identity provider such as AD FS or Google posts a signed
assertion to ``POST /v1/saml/{provider}/acs`` (HTTP-POST binding, IdP-initiated), and the meshUser
it describes is created or updated as an OIDC login does it (source ``saml:<provider>``).
``GET /v1/saml/{provider}/metadata`` is this service provider's metadata for the IdP.

pysaml2 does the protocol: the assertion's XML signature against the IdP metadata's certificates
(xmlsec1), the audience (our entity id), the recipient and destination (our ACS URL), NotBefore and
NotOnOrAfter with ``leeway``; an unsigned assertion is refused. Before it, the decoded XML is
parsed with defusedxml, which refuses a DTD, entities and external references (entity expansion).
A replayed assertion (its ID seen before, on any replica: the state store remembers each until it
expires) is refused. Nothing of the assertion is logged or echoed."""

from __future__ import annotations

import base64
import binascii
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from replicator.core.config import SamlProvider
from replicator.logs import get_logger
from replicator.sources.bodies import read_body
from replicator.sources.logins import error, write_login

if TYPE_CHECKING:
    from replicator.sources.host import SourceHost
    from state import Store

log = get_logger("replicator.saml")

MAX_RESPONSE_BYTES = 256 * 1024
"""A larger form body is refused before it is read whole (a SAML response is a few KB)."""
NAME_ID = "NameID"


class AssertionRejected(Exception):
    """Not accepted; ``reason`` is short and safe to return (it never holds the assertion)."""

    def __init__(self, reason: str, status: int = 401) -> None:
        self.reason, self.status = reason, status
        super().__init__(reason)


class ServiceProvider:
    """pysaml2's service provider for one configured IdP (blocking: xmlsec1 runs as a process)."""

    def __init__(self, provider: SamlProvider, config_dir: Path) -> None:
        from saml2 import BINDING_HTTP_POST
        from saml2.client import Saml2Client
        from saml2.config import SPConfig

        self.provider = provider
        xmlsec = shutil.which("xmlsec1")
        if xmlsec is None:
            raise RuntimeError("xmlsec1 is not installed (Debian's xmlsec1 package): no signature checks")
        metadata = (config_dir / provider.idp_metadata).resolve()
        config = SPConfig()
        config.load(
            {
                "entityid": provider.sp_entity_id,
                "xmlsec_binary": xmlsec,
                "metadata": {"local": [str(metadata)]},
                "accepted_time_diff": int(provider.leeway),
                "service": {
                    "sp": {
                        "endpoints": {"assertion_consumer_service": [(provider.acs_url, BINDING_HTTP_POST)]},
                        "allow_unsolicited": True,  # IdP-initiated: replays are refused by the store
                        "want_assertions_signed": True,
                        "want_response_signed": False,
                        "authn_requests_signed": False,
                    }
                },
            }
        )
        self.config = config
        self.client = Saml2Client(config=config)

    def metadata(self) -> str:
        from saml2.metadata import create_metadata_string

        xml: bytes = create_metadata_string(None, config=self.config, valid=None)
        return xml.decode()

    def verify(self, encoded: str) -> tuple[dict[str, Any], str, datetime]:
        """The attributes (``NameID`` among them), the assertion's ID and when it expires, or
        AssertionRejected."""
        from saml2 import BINDING_HTTP_POST

        try:
            xml = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as e:
            raise AssertionRejected("SAMLResponse is not base64", 400) from e
        root = refuse_dangerous_xml(xml)
        destination = root.get("Destination")
        if destination is not None and destination != self.provider.acs_url:
            raise AssertionRejected("wrong destination")
        try:
            response = self.client.parse_authn_request_response(encoded, BINDING_HTTP_POST)
        except Exception as e:  # pysaml2 raises many kinds, none of them for the caller to see
            raise AssertionRejected(_reason(e)) from e
        if response is None or response.assertion is None:
            raise AssertionRejected("no assertion")
        assertion = response.assertion  # signed: want_assertions_signed refuses it otherwise
        conditions = assertion.conditions
        expires = _when(conditions.not_on_or_after if conditions is not None else None)
        if expires is None:
            raise AssertionRejected("the assertion has no NotOnOrAfter")
        attributes: dict[str, Any] = {k: v[0] if isinstance(v, list) and len(v) == 1 else v
                                      for k, v in (response.ava or {}).items()}  # fmt: skip
        name_id = response.name_id.text if response.name_id is not None else None
        attributes[NAME_ID] = name_id.strip() if isinstance(name_id, str) else None
        return attributes, str(assertion.id), expires


def refuse_dangerous_xml(xml: bytes) -> Any:
    """The XML's root, parsed by defusedxml first: a DTD, an entity or an external reference is
    refused."""
    import defusedxml.ElementTree as SafeET
    from defusedxml import DefusedXmlException

    try:
        return SafeET.fromstring(xml, forbid_dtd=True)
    except DefusedXmlException as e:
        raise AssertionRejected("the XML declares a DTD or entities: refused", 400) from e
    except SafeET.ParseError as e:
        raise AssertionRejected("SAMLResponse is not XML", 400) from e


def _reason(e: Exception) -> str:
    name = type(e).__name__
    text = str(e).lower()
    if "signature" in name.lower() or "signed" in text or "signature" in text:
        return "bad or missing signature"
    if "audience" in text:
        return "wrong audience"
    if "recipient" in text or "destination" in text:
        return "wrong recipient"
    if name in ("ResponseLifetimeExceed", "ToEarly") or "lifetime" in text or "too early" in text:
        return "expired or not yet valid"
    return f"assertion refused ({name})"


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def user_document(provider: SamlProvider, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The meshUser a verified assertion describes: ``id`` and ``euid`` are required."""
    m = provider.attributes

    def text(name: str, required: bool) -> str | None:
        value = attributes.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if required:
            raise AssertionRejected(f"the assertion has no attribute {name!r}", 422)
        return None

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
        "metadata": {"name": text(m.id, True)},
        "spec": {k: v for k, v in spec.items() if v is not None},
    }


def routes(host: SourceHost) -> list[BaseRoute]:
    providers: dict[str, ServiceProvider] = {}

    def service(name: str) -> ServiceProvider | JSONResponse:
        validated = host.validated
        if validated is None or host.store is None:
            return error(503, "the daemon has no valid configuration yet")
        provider = next((p for p in validated.config.identity.saml if p.name == name), None)
        if provider is None:
            return error(404, f"unknown SAML provider {name!r}", where="path")
        sp = providers.get(name)
        if sp is None or sp.provider != provider:  # new or reconfigured
            try:
                sp = providers[name] = ServiceProvider(provider, host.config_path.parent)
            except Exception as e:  # unreadable metadata, no xmlsec1: the operator's to fix
                log.error("saml provider unusable", provider=name, error=f"{type(e).__name__}: {e}")
                return error(503, f"SAML provider {name!r} is not usable: see the daemon's log")
        return sp

    async def metadata(request: Request) -> Response:
        sp = service(request.path_params["provider"])
        if isinstance(sp, Response):
            return sp
        return Response(sp.metadata(), media_type="application/samlmetadata+xml")

    async def acs(request: Request) -> Response:
        from replicator.threads import blocking
        from state import StoreError

        name = request.path_params["provider"]
        sp = service(name)
        if isinstance(sp, Response):
            return sp
        encoded = await _read_response(request)
        if isinstance(encoded, Response):
            return encoded
        store = host.store
        assert store is not None
        try:
            attributes, assertion_id, expires = await blocking(sp.verify, encoded)
            doc = user_document(sp.provider, attributes)
            if not await blocking(first_use, store, name, assertion_id, expires, sp.provider.leeway):
                raise AssertionRejected("replayed assertion")
        except AssertionRejected as e:
            log.warning("saml login refused", provider=name, reason=e.reason)
            return error(e.status, e.reason)
        except StoreError as e:
            log.error("saml login not stored: state store unavailable", provider=name, error=str(e))
            return error(503, "the state store is unavailable; try again")
        label, where = f"saml login ({name})", f"assertion attribute {sp.provider.attributes.id}"
        try:
            answer, wrote = await blocking(
                write_login, host.config_path, store, f"saml:{name}", label, doc, where, host.loaded_cache
            )
        except StoreError as e:
            log.error("saml login not stored: state store unavailable", provider=name, error=str(e))
            return error(503, "the state store is unavailable; try again")
        if wrote:
            host.objects_changed()
        return answer

    return [
        Route("/v1/saml/{provider}/metadata", metadata, methods=["GET"]),
        Route("/v1/saml/{provider}/acs", acs, methods=["POST"]),
    ]


async def _read_response(request: Request) -> str | JSONResponse:
    """The form field SAMLResponse of an HTTP-POST binding."""
    from urllib.parse import parse_qs

    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        why = "send the HTTP-POST binding's form (application/x-www-form-urlencoded)"
        return error(415, why, where="body")
    raw = await read_body(request, MAX_RESPONSE_BYTES)
    if raw is None:
        return error(413, "the body is too large for a SAML response", where="body")
    try:
        values = parse_qs(raw.decode("ascii"), max_num_fields=10).get("SAMLResponse", [])
    except (UnicodeDecodeError, ValueError):
        values = []
    if len(values) != 1 or not values[0].strip():
        return error(400, "no SAMLResponse form field", where="form field SAMLResponse")
    return values[0].strip()


def first_use(store: Store, provider: str, assertion_id: str, expires: datetime, leeway: float) -> bool:
    """Record the assertion's ID until it expires; False when it was seen before (a replay)."""
    keep_until = expires + timedelta(seconds=leeway)
    return store.remember_assertion(f"{provider}:{assertion_id}", keep_until)
