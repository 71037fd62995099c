"""A SAML 2.0 identity provider for tests: pysaml2's own IdP (``saml2.server.Server``), with a key
and a self-signed certificate made here, issuing signed responses for the daemon's service provider
as AD FS or Google would post them (IdP-initiated, HTTP-POST binding)."""

from __future__ import annotations

import base64
import datetime as dt
import shutil
from pathlib import Path
from typing import Any

IDP_ENTITY = "https://idp.example.test/saml"
SP_ENTITY = "https://replicator.example.test/saml"


def key_and_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """An RSA key and a self-signed certificate for it, as PEM files in ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    key_file, cert_file = folder / f"{name}.key", folder / f"{name}.crt"
    pem = serialization.Encoding.PEM
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    )
    cert_file.write_bytes(cert.public_bytes(pem))
    return key_file, cert_file


class SamlIdp:
    """``IdP(folder)`` writes the IdP's metadata to ``metadata_file`` (for the SP's config);
    ``response(...)`` is a base64 SAMLResponse for the daemon's ACS."""

    def __init__(self, folder: Path, acs_url: str, *, name: str = "idp", lifetime_minutes: int = 5) -> None:
        from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
        from saml2.config import IdPConfig
        from saml2.metadata import create_metadata_string

        xmlsec = shutil.which("xmlsec1")
        assert xmlsec, "xmlsec1 is needed (make saml-backend)"
        self.folder, self.acs_url = folder, acs_url
        self.key_file, self.cert_file = key_and_certificate(folder, name)
        sp_metadata = folder / "sp-metadata.xml"
        sp_metadata.write_text(_sp_metadata(acs_url))
        config = IdPConfig()
        config.load(
            {
                "entityid": IDP_ENTITY,
                "xmlsec_binary": xmlsec,
                "key_file": str(self.key_file),
                "cert_file": str(self.cert_file),
                "metadata": {"local": [str(sp_metadata)]},
                "service": {
                    "idp": {
                        "endpoints": {
                            "single_sign_on_service": [
                                (f"{IDP_ENTITY}/sso/redirect", BINDING_HTTP_REDIRECT),
                                (f"{IDP_ENTITY}/sso/post", BINDING_HTTP_POST),
                            ]
                        },
                        "policy": {"default": {"lifetime": {"minutes": lifetime_minutes}}},
                        "name_id_format": ["urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"],
                    }
                },
            }
        )
        self.config = config
        self.metadata_file = folder / f"{name}-metadata.xml"
        self.metadata_file.write_bytes(create_metadata_string(None, config=config, valid=None))

    def response_xml(
        self,
        name_id: str,
        attributes: dict[str, Any] | None = None,
        *,
        audience: str = SP_ENTITY,
        destination: str | None = None,
        sign: bool = True,
    ) -> str:
        from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NameID
        from saml2.server import Server

        server = Server(config=self.config)
        response = server.create_authn_response(
            identity=attributes or {},
            in_response_to=None,
            destination=destination or self.acs_url,
            sp_entity_id=audience,
            name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=name_id),
            authn={"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:Password", "authn_auth": IDP_ENTITY},
            sign_assertion=sign,
            sign_response=False,
        )
        return str(response)

    def response(self, name_id: str, attributes: dict[str, Any] | None = None, **options: Any) -> str:
        return base64.b64encode(self.response_xml(name_id, attributes, **options).encode()).decode()


def _sp_metadata(acs_url: str) -> str:
    """The service provider's metadata, as the daemon serves it at /v1/saml/{name}/metadata."""
    return f"""<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{SP_ENTITY}">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"
      WantAssertionsSigned="true">
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
        Location="{acs_url}" index="0"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"""
