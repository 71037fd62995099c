"""The ``azure:`` block of a platform in the config file."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import pydantic

from platforms.options import Options, SecretRef

LookupStrategy = Literal["UserByMailLookupStrategy", "UserByUsernameLookupStrategy"]
LOOKUP_ATTRIBUTES: dict[str, str] = {
    "UserByMailLookupStrategy": "mail",
    "UserByUsernameLookupStrategy": "userPrincipalName",
}


class ClientSecretCredentials(Options):
    """An app registration (service principal) with a client secret."""

    client_id: str = pydantic.Field(min_length=1)
    """The application (client) id."""
    client_secret: SecretRef
    """The client secret: ``{env: NAME}`` or ``{file: PATH}``."""


class CertificateCredentials(Options):
    """An app registration with a certificate (PEM or PKCS12 file holding the private key)."""

    client_id: str = pydantic.Field(min_length=1)
    """The application (client) id."""
    certificate_file: str | None = pydantic.Field(default=None, min_length=1)
    """Path of the certificate with its private key (PEM or PKCS12)."""
    certificate: SecretRef | None = None
    """Or the PEM text (certificate and private key) in ``{env: NAME}`` or ``{file: PATH}``."""
    certificate_password: SecretRef | None = None
    """Password of the certificate's private key, when it has one."""
    send_certificate_chain: bool = False
    """Send the certificate chain (x5c) with each token request (subject name/issuer auth)."""

    @pydantic.model_validator(mode="after")
    def _one_certificate(self) -> CertificateCredentials:
        if (self.certificate_file is None) == (self.certificate is None):
            raise ValueError("give certificateFile or certificate, exactly one of the two")
        return self


class WorkloadIdentitySettings(Options):
    """Settings of the workload identity federation (AKS, GitHub Actions, ...)."""

    client_id: str | None = None
    """The application (client) id; null: ``$AZURE_CLIENT_ID``."""
    token_file: str | None = None
    """The projected service-account token; null: ``$AZURE_FEDERATED_TOKEN_FILE``."""


class WorkloadIdentityCredentials(Options):
    """Federated workload identity: a projected token exchanged for an Entra ID token."""

    workload_identity: WorkloadIdentitySettings
    """``{clientId, tokenFile}``, both optional (the environment the webhook sets is used)."""


class ManagedIdentitySettings(Options):
    """Which managed identity."""

    client_id: str | None = None
    """A user-assigned identity's client id; null: the system-assigned identity."""


class ManagedIdentityCredentials(Options):
    """The managed identity of the VM, App Service or container the replicator runs in."""

    managed_identity: ManagedIdentitySettings
    """``{clientId}`` of a user-assigned identity, or ``{}`` for the system-assigned one."""


class B2bGuestInvitation(Options):
    """Invite bound users missing in the directory as B2B guests."""

    enabled: bool = False
    """Invite a bound user the lookup did not find (off: a missing user is a USER_NOT_FOUND warning)."""
    send_mail: bool = False
    """Let Entra ID send the invitation mail (off: the guest redeems on first sign-in)."""
    redirect_url: str = "https://myapps.microsoft.com"
    """Where a guest lands after redeeming the invitation."""


class AzureOptions(Options):
    """The ``azure:`` block of a platform in the config file."""

    tenant_id: str = pydantic.Field(min_length=1)
    """The Entra ID tenant (directory) id or its primary domain: where groups and users live."""
    scope: Literal["subscription", "resourceGroup"] = "subscription"
    """What a meshTenant is: a subscription (``localId`` = subscription id) or a resource group
    (``localId`` = resource group name, in ``subscriptionId``)."""
    subscription_id: str | None = None
    """The parent subscription of the resource groups (required with ``scope: resourceGroup``)."""
    credentials: (
        ClientSecretCredentials
        | CertificateCredentials
        | WorkloadIdentityCredentials
        | ManagedIdentityCredentials
    )
    """How the replicator signs in: ``{clientId, clientSecret}``, ``{clientId, certificateFile,
    certificatePassword}``, ``{workloadIdentity: {...}}`` or ``{managedIdentity: {...}}``. It needs
    Graph ``Group.Create``/``GroupMember.ReadWrite.All``/``User.Read.All`` (+ ``User.Invite.All``
    for guests) and ``Microsoft.Authorization/roleAssignments/*`` on the scopes."""
    user_lookup_strategy: LookupStrategy | None = None
    """User attribute euids are matched against; null: the global
    ``replication.aadUserLookupStrategy``."""
    administrative_unit_id: str | None = None
    """Create groups inside this administrative unit (null: in the directory root)."""
    b2b_guest_invitation: B2bGuestInvitation = pydantic.Field(
        default=B2bGuestInvitation(), alias="b2bGuestInvitation"
    )
    """Invite bound users missing in the directory as guests (off by default)."""
    graph_url: str | None = None
    """Microsoft Graph root (null: ``https://graph.microsoft.com``; sovereign clouds and emulators
    set theirs, e.g. ``https://graph.microsoft.us``). ``/v1.0`` is appended."""
    arm_url: str | None = None
    """Azure Resource Manager root (null: ``https://management.azure.com``)."""
    authority_host: str | None = None
    """Entra ID sign-in authority (null: the public cloud, or ``$AZURE_AUTHORITY_HOST``); setting it
    turns off MSAL's instance discovery, which only knows Microsoft's hosts."""
    ca_file: str | None = None
    """A CA bundle to verify Graph, ARM and the authority with (null: the system's)."""
    timeout: float = pydantic.Field(default=60.0, gt=0)
    """Seconds per request before it is abandoned (retryable)."""
    page_size: int = pydantic.Field(default=999, ge=1, le=999)
    """``$top`` of member lists (Graph's maximum is 999)."""
    max_throttle_wait: float = pydantic.Field(default=30.0, ge=0)
    """A throttled request (429/503) whose Retry-After is at most this many seconds is waited out
    and repeated; a longer one fails the call as retryable (the engine or the next run retries)."""
    throttle_attempts: int = pydantic.Field(default=4, ge=1)
    """Attempts per request while the platform keeps answering 429/503."""
    consistency_attempts: int = pydantic.Field(default=5, ge=1)
    """Attempts of a call that refers to a just-created group or guest Entra ID does not know yet."""
    consistency_wait: float = pydantic.Field(default=1.0, ge=0)
    """First wait (seconds) between those attempts; it doubles each time (at most 30 s)."""
    consistency_window: float = pydantic.Field(default=900.0, ge=0)
    """Seconds after its creation during which a group or guest this replicator created may still
    be unknown to a Graph replica or to ARM (Entra ID: seconds, ARM: up to minutes). Within it, an
    object that is not visible is pending (the tenant is requeued), not gone; past it, a recorded
    group that Graph does not show has vanished (deleted by someone else) and is created again."""
    pending_retry_after: float = pydantic.Field(default=30.0, gt=0)
    """Seconds a tenant waits for Entra ID or ARM to catch up before it is tried again."""

    @pydantic.model_validator(mode="after")
    def _resolve(self, info: pydantic.ValidationInfo) -> AzureOptions:
        if self.scope == "resourceGroup" and not self.subscription_id:
            raise ValueError("scope resourceGroup needs subscriptionId (the resource groups' subscription)")
        if self.user_lookup_strategy is None:
            context = info.context if isinstance(info.context, Mapping) else {}
            replication = context.get("replication")
            strategy = getattr(replication, "aad_user_lookup_strategy", None)
            if isinstance(replication, Mapping):
                strategy = replication.get("aadUserLookupStrategy")
            strategy = strategy or "UserByMailLookupStrategy"
            object.__setattr__(self, "user_lookup_strategy", strategy)
        return self

    @property
    def lookup_attribute(self) -> str:
        """``mail`` or ``userPrincipalName``."""
        return LOOKUP_ATTRIBUTES[self.user_lookup_strategy or "UserByMailLookupStrategy"]

    @property
    def quota_owner(self) -> str:
        """The Entra ID tenant and the app the replicator signs in as. Microsoft Graph throttles
        per app per tenant (learn.microsoft.com/graph/throttling-limits: limits are scoped "per app
        across all tenants, per tenant for all apps, per app per tenant"; the identity and access
        limits that our group, member and user calls meet are per app and tenant pair). A managed
        or workload identity without a client id names the identity of the process (one per
        process, whatever the entry)."""
        client = getattr(self.credentials, "client_id", None)
        if client is None:
            nested = getattr(self.credentials, "workload_identity", None) or getattr(
                self.credentials, "managed_identity", None
            )
            client = getattr(nested, "client_id", None) or type(self.credentials).__name__
        return f"azure:{self.tenant_id}:{client}"
