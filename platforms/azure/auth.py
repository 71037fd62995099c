"""Signing in: one azure-identity credential for Graph and ARM (imported lazily)."""

from __future__ import annotations

import asyncio
from typing import Any

from platforms.azure.errors import first_line
from platforms.azure.options import (
    AzureOptions,
    CertificateCredentials,
    ClientSecretCredentials,
    WorkloadIdentityCredentials,
)
from platforms.contract import PlatformConfigError


class AsyncCredential:
    """The async face kiota asks for, over one sync azure-identity credential (shared with the ARM
    client, so one token cache): a token request runs in a worker thread, not in the event loop."""

    def __init__(self, credential: Any) -> None:
        self._credential = credential

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        kwargs.pop("enable_cae", None)
        if not kwargs.get("claims"):
            kwargs.pop("claims", None)
        return await asyncio.to_thread(self._credential.get_token, *scopes, **kwargs)


def make_credential(identifier: str, opts: AzureOptions) -> Any:
    """The azure-identity credential the ``credentials`` block names (a sync one; Graph gets it
    through :class:`AsyncCredential`)."""
    from azure import identity

    creds = opts.credentials
    common: dict[str, Any] = {}
    if opts.authority_host:
        common["authority"] = opts.authority_host
    if opts.ca_file:
        common["connection_verify"] = opts.ca_file
    discovery: dict[str, Any] = {"disable_instance_discovery": True} if opts.authority_host else {}
    try:
        if isinstance(creds, ClientSecretCredentials):
            return identity.ClientSecretCredential(
                opts.tenant_id, creds.client_id, creds.client_secret.resolve(), **common, **discovery
            )
        if isinstance(creds, CertificateCredentials):
            password = creds.certificate_password.resolve() if creds.certificate_password else None
            source: dict[str, Any] = (
                {"certificate_data": creds.certificate.resolve().encode()}
                if creds.certificate is not None
                else {"certificate_path": creds.certificate_file}
            )
            return identity.CertificateCredential(
                opts.tenant_id,
                creds.client_id,
                **source,
                password=password,
                send_certificate_chain=creds.send_certificate_chain,
                **common,
                **discovery,
            )
        if isinstance(creds, WorkloadIdentityCredentials):
            wi = creds.workload_identity
            kwargs: dict[str, Any] = {"tenant_id": opts.tenant_id, **common, **discovery}
            if wi.client_id:
                kwargs["client_id"] = wi.client_id
            if wi.token_file:
                kwargs["token_file_path"] = wi.token_file
            return identity.WorkloadIdentityCredential(**kwargs)
        mi = creds.managed_identity
        managed: dict[str, Any] = {"connection_verify": opts.ca_file} if opts.ca_file else {}
        return identity.ManagedIdentityCredential(client_id=mi.client_id, **managed)
    except ValueError as exc:  # SecretRef.resolve and azure-identity: names no secret value
        raise PlatformConfigError(f"{identifier}: credentials: {first_line(exc)}") from None
    except OSError as exc:
        raise PlatformConfigError(
            f"{identifier}: credentials: cannot read {exc.filename}: {exc.strerror}"
        ) from None
