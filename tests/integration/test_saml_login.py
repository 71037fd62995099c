"""SAML 2.0 login against pysaml2's own identity provider (tests/support/saml_idp.py), over HTTP
to the real daemon app: a signed assertion creates or updates the user; forged, unsigned,
replayed, expired, wrong-audience, wrong-destination, wrapped (XML signature wrapping) and
entity-expanding ones are refused, with a JSON error and never a traceback."""

from __future__ import annotations

import base64
import os
import shutil
import xml.etree.ElementTree as etree
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from replicator.service.daemon import Daemon
from tests.integration.test_oidc_login import write_config, write_inventory
from tests.support.local_server import free_port
from tests.support.saml_idp import SP_ENTITY, SamlIdp

pytestmark = pytest.mark.skipif(
    shutil.which("xmlsec1") is None and os.environ.get("CI") != "true",  # under CI: fail, not skip
    reason="xmlsec1 is missing (make saml-backend installs Debian's xmlsec1)",
)

SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
for prefix, uri in (
    ("saml", SAML),
    ("samlp", "urn:oasis:names:tc:SAML:2.0:protocol"),
    ("ds", "http://www.w3.org/2000/09/xmldsig#"),
):
    etree.register_namespace(prefix, uri)  # re-serialized, the signed XML keeps its prefixes


class Env:
    def __init__(self, daemon: Daemon, http: httpx.AsyncClient, idp: SamlIdp) -> None:
        self.daemon, self.http, self.idp = daemon, http, idp

    async def post(self, encoded: str) -> httpx.Response:
        return await self.http.post("/v1/saml/corp/acs", data={"SAMLResponse": encoded, "RelayState": "x"})


@pytest.fixture
async def env(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> AsyncIterator[Env]:
    port = free_port()
    acs = f"http://127.0.0.1:{port}/v1/saml/corp/acs"
    idp = SamlIdp(tmp_path, acs, lifetime_minutes=5)
    provider = {
        "name": "corp",
        "idpMetadata": idp.metadata_file.name,
        "spEntityId": SP_ENTITY,
        "acsUrl": acs,
        "attributes": {"id": "NameID", "euid": "NameID", "username": "NameID", "email": "email"},
        "leeway": "5s",
    }
    path = write_config(tmp_path, "http://127.0.0.1:9")  # the OIDC test's platform and inventory
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    config["identity"] = {"saml": [provider]}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    write_inventory(tmp_path)
    d = Daemon(config_path=tmp_path / "replicator.yaml", listen=("127.0.0.1", port), workers=0, grace=1)
    await d.start()
    assert d.validated is not None, d.config_error
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        yield Env(d, http, idp)
    finally:
        await http.aclose()
        await d.stop()
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err


async def test_a_signed_assertion_creates_then_updates_the_user(env: Env) -> None:
    r = await env.post(env.idp.response("alice@example.com", {"email": ["alice@example.com"]}))
    assert r.status_code == 201, r.text
    alice = "alice@example.com"
    assert r.json() == {"user": alice, "euid": alice, "created": True, "changed": True}
    assert env.daemon.store is not None
    stored = env.daemon.store.get_object("meshUser", "alice@example.com")
    assert stored is not None
    assert stored.source == "saml:corp"
    again = await env.post(env.idp.response("alice@example.com", {"email": ["alice@corp.example.com"]}))
    assert (again.status_code, again.json()["changed"]) == (200, True)
    stored = env.daemon.store.get_object("meshUser", "alice@example.com")
    assert stored is not None
    assert stored.document["spec"]["email"] == "alice@corp.example.com"


async def test_the_metadata_names_our_entity_and_acs(env: Env) -> None:
    r = await env.http.get("/v1/saml/corp/metadata")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/samlmetadata+xml")
    root = etree.fromstring(r.content)  # our own answer
    assert root.get("entityID") == SP_ENTITY
    (acs,) = root.iter("{urn:oasis:names:tc:SAML:2.0:metadata}AssertionConsumerService")
    assert acs.get("Location") == env.idp.acs_url
    assert (await env.http.get("/v1/saml/nope/metadata")).status_code == 404


async def test_a_replayed_assertion_is_refused(env: Env) -> None:
    once = env.idp.response("carol@example.com")
    assert (await env.post(once)).status_code == 201
    again = await env.post(once)
    assert (again.status_code, again.json()) == (401, {"error": "replayed assertion"})


def rewritten(xml: str) -> str:
    """The response parsed and written again, unchanged (the control for ``wrapped``)."""
    return base64.b64encode(etree.tostring(etree.fromstring(xml.encode()))).decode()


def wrapped(xml: str) -> str:
    """XML signature wrapping: the signed assertion moved into the forged one's Advice, and the
    forged one (mallory) where the IdP's was."""
    root = etree.fromstring(xml.encode())
    (signed,) = root.findall(f"{{{SAML}}}Assertion")
    forged = etree.fromstring(etree.tostring(signed))
    for sig in forged.findall("{http://www.w3.org/2000/09/xmldsig#}Signature"):
        forged.remove(sig)
    forged.set("ID", "_forged")
    forged.find(f".//{{{SAML}}}NameID").text = "mallory@example.com"  # type: ignore[union-attr]
    advice = etree.SubElement(forged, f"{{{SAML}}}Advice")
    root.remove(signed)
    advice.append(signed)
    root.append(forged)
    return base64.b64encode(etree.tostring(root)).decode()


ENTITIES = base64.b64encode(
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
    b'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol">&b;</samlp:Response>'
).decode()


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("unsigned", 401, "bad or missing signature"),
        ("forged", 401, "bad or missing signature"),
        ("audience", 401, "wrong audience"),
        ("destination", 401, "wrong destination"),
        ("wrapped", 401, None),
        ("entities", 400, "the XML declares a DTD or entities: refused"),
        ("base64", 400, "SAMLResponse is not base64"),
        ("not xml", 400, "SAMLResponse is not XML"),
    ],
)
async def test_bad_assertions_are_refused_and_change_nothing(
    env: Env, tmp_path: Path, case: str, status: int, reason: str | None
) -> None:
    idp = env.idp
    if case == "unsigned":
        body = idp.response("mallory@example.com", sign=False)
    elif case == "forged":  # same entity id, another key: not the one in the metadata
        (tmp_path / "evil").mkdir()
        body = SamlIdp(tmp_path / "evil", idp.acs_url, name="evil").response("mallory@example.com")
    elif case == "audience":
        body = idp.response("mallory@example.com", audience="https://other.example.test/saml")
    elif case == "destination":
        body = idp.response("mallory@example.com", destination="https://evil.example.test/acs")
    elif case == "wrapped":
        xml = idp.response_xml("alice@example.com")
        control = await env.post(rewritten(xml))
        assert control.status_code == 201, "parsed and written again, the signed response still counts"
        body = wrapped(idp.response_xml("alice@example.com"))
    elif case == "entities":
        body = ENTITIES
    elif case == "base64":
        body = "not base64 !!"
    else:
        body = base64.b64encode(b"<unclosed").decode()
    r = await env.post(body)
    assert r.status_code == status, r.text
    if reason is not None:
        assert r.json() == {"error": reason}
    else:
        assert "error" in r.json()
    assert env.daemon.store is not None
    assert env.daemon.store.get_object("meshUser", "mallory@example.com") is None


async def test_an_expired_assertion_is_refused(tmp_path: Path) -> None:
    from replicator.core.config import SamlProvider
    from replicator.sources.saml import AssertionRejected, ServiceProvider

    acs = "http://127.0.0.1:9/v1/saml/corp/acs"
    idp = SamlIdp(tmp_path, acs, lifetime_minutes=0)  # NotOnOrAfter = IssueInstant
    provider = SamlProvider(
        name="corp", idp_metadata=str(idp.metadata_file), sp_entity_id=SP_ENTITY, acs_url=acs, leeway=0
    )
    sp = ServiceProvider(provider, tmp_path)
    stale = idp.response("alice@example.com")
    import asyncio

    await asyncio.sleep(1.1)
    with pytest.raises(AssertionRejected, match="expired or not yet valid"):
        sp.verify(stale)


async def test_the_form_is_checked_before_anything_is_parsed(env: Env) -> None:
    r = await env.http.post("/v1/saml/corp/acs", json={"SAMLResponse": "x"})
    assert r.status_code == 415
    r = await env.http.post("/v1/saml/corp/acs", data={"RelayState": "x"})
    assert (r.status_code, r.json()["where"]) == (400, "form field SAMLResponse")
    r = await env.http.post("/v1/saml/corp/acs", data={"SAMLResponse": "x" * 300_000})
    assert r.status_code == 413
    assert (await env.http.post("/v1/saml/nope/acs", data={"SAMLResponse": "x"})).status_code == 404


def test_validate_names_a_missing_idp_metadata_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from replicator.cli.main import main

    path = write_config(tmp_path, "http://127.0.0.1:9")
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    acs = "http://127.0.0.1:9/v1/saml/corp/acs"
    config["identity"] = {
        "saml": [{"name": "corp", "idpMetadata": "idp.xml", "spEntityId": SP_ENTITY, "acsUrl": acs}]
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    write_inventory(tmp_path)
    assert main(["-c", str(path), "validate"]) == 1
    err = capsys.readouterr().err
    assert f"saml provider corp: idpMetadata: no IdP metadata file {tmp_path / 'idp.xml'}" in err
