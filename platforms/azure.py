"""Azure driver: Entra ID groups through Microsoft Graph, Azure RBAC role assignments through ARM.

A tenant is a subscription (``scope: subscription``, ``localId`` = the subscription id) or a
resource group of one subscription (``scope: resourceGroup``, ``localId`` = the resource group's
name, ``subscriptionId`` set); the driver addresses it by its ARM id. Groups are Entra ID security
groups (mail-disabled) named by the platform's pattern (``displayName``; no prefix), optionally
created inside an administrative unit; a role is a role definition (a GUID, or a full ARM id
``/subscriptions/<sub>/providers/Microsoft.Authorization/roleDefinitions/<guid>``) assigned to the
group on the tenant's scope. Users are matched by ``mail`` or ``userPrincipalName`` (the global
``replication.aadUserLookupStrategy``, or the block's ``userLookupStrategy``), case-insensitively.
With ``b2bGuestInvitation.enabled`` a bound user missing in the directory is invited as a B2B guest
(``POST /invitations``, no mail by default) and then added.

msgraph-sdk (async, kiota) talks to Graph; azure-mgmt-authorization (sync, in a worker thread) to
ARM; both take their tokens from one azure-identity credential. The SDKs are imported lazily, inside
methods, so importing this module is cheap. The SDKs' own retry handlers are switched off: every
request goes through ``AzureDriver._request``, which counts it in ``AzureDriver.api_calls`` under an
operation name (one count per request or page, token requests not counted), waits out a throttled
answer (429/503 with Retry-After up to ``maxThrottleWait``, the platform's budget paused meanwhile)
and maps errors to the contract's types; a longer Retry-After becomes ``RetryableError``.

Entra ID is eventually consistent: a group or guest created a moment ago may be unknown to
``members/$ref`` (404) and to ARM (``PrincipalNotFound``) for seconds. Those calls are retried with
a short exponential backoff (``consistencyAttempts``, ``consistencyWait``) and then raise
``RetryableError`` (the engine retries the change, the next run the tenant); they never fail a
tenant permanently.

API calls per operation (names as counted; U transformed euids, M members of a group):

``lookup_users``
    ``list_users`` x ceil(U/15) (``$filter=<attribute> in (...)``, ``$select``; plus pages past the
    first), once per euid per driver instance (cached, not-found too). With B2B guests and the
    ``userPrincipalName`` strategy, euids still missing are looked for once more among guests by
    ``mail`` (``list_guests`` x ceil(missing/15)).
``observe`` (per tenant)
    ``list_groups`` x ceil(G/15) for the G owned records with an id (``$filter=id in (...)``,
    ``$select=id,displayName,description``: existence and our marker; a record whose group is not
    listed has vanished); ``list_role_assignments`` x pages, once, when the first group of ours is
    observed (ARM, the scope's list with ``$filter=atScope()``; rows of the exact scope kept and
    grouped by ``principalId``).
``observe`` (per owned group)
    ``list_members`` x ceil(M/pageSize) (a pending record without id: ``find_group`` 1 first).
``observe`` (per desired name that no owned record has)
    ``find_group`` 1 (+ ``list_members`` when the group is ours).
    A no-op observe of a tenant with G owned groups: G + 2 calls for G <= 15 (G + 1 Graph, 1 ARM).
``apply``
    create_group:  ``find_group`` 1, + ``create_group`` 1 when it does not exist
    add_member:    ``add_member`` 1 (an existing membership is success), retried while 404
    remove_member: ``remove_member`` 1 (404: not a member, success)
    grant:         ``create_role_assignment`` 1 (a deterministic name; 409 RoleAssignmentExists is
                   success), retried while PrincipalNotFound
    revoke:        ``list_role_assignments`` x pages + ``delete_role_assignment`` per matching one
    delete_group:  ``get_group`` 1 (group id unknown: ``find_group`` 1) + ``delete_group`` 1
    ensure_user:   ``invite_user`` 1 (with B2B guests enabled; Graph returns the existing guest
                   when the address was invited before), once per euid and driver instance (the
                   other tenants of the run reuse the guest)

Ownership: every group this driver creates has the description
``"<OWNER_MARKER> tenant=<tenant key>"``. A group recorded in the state store counts as ours when
its description starts with the marker; a group found only by name (crash leftover) counts as ours
only when the marker also names this tenant. Entra ID does not keep display names unique: of
several groups with one name, the one marked for this tenant is taken.

Removal policy (CONTRACT section 6): members and role assignments on owned groups that the
replicator did not make are removed (``externalGrants`` default ``remove``); observe reports every
assignment of the group on exactly the tenant's scope (inherited ones from above are not ours to
change and are left out).

Role spelling: ARM reports an assignment by its role definition's id; observe reports it as the
lower-case GUID, or as the string the state store recorded when the replicator granted it (so a
role written as a full ARM id, or in upper case, compares equal to the plan's). A revoke of a role
definition that this driver instance granted in the same run under another spelling is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import re
import threading
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlparse

import pydantic

from platforms.contract import (
    OPTIONS_CONFIG,
    Action,
    Capabilities,
    Change,
    Driver,
    ForeignObjectError,
    ObservedGroup,
    ObservedTenant,
    OwnedGroup,
    PermanentError,
    PlatformConfigError,
    PlatformError,
    PlatformUser,
    RetryableError,
    TenantRef,
)
from platforms.kit import is_marked, is_marked_for, observe_marked_groups, owner_marker
from platforms.secrets import SecretRef

T = TypeVar("T")

LookupStrategy = Literal["UserByMailLookupStrategy", "UserByUsernameLookupStrategy"]
LOOKUP_ATTRIBUTES: dict[str, str] = {
    "UserByMailLookupStrategy": "mail",
    "UserByUsernameLookupStrategy": "userPrincipalName",
}
MAX_FILTER_VALUES = 15
"""Graph accepts at most 15 values in one ``in (...)`` filter expression."""

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_ROLE_PATTERN = re.compile(
    rf"(?:/subscriptions/{_GUID}|/providers/Microsoft\.Management/managementGroups/[^/]+)?"
    rf"/providers/Microsoft\.Authorization/roleDefinitions/{_GUID}|{_GUID}",
    re.IGNORECASE,
)
# Entra ID refuses control characters in a group's displayName (up to 256 characters).
_DISPLAY_NAME_PATTERN = re.compile(r"[^\x00-\x1f\x7f]+")
# mailNickname: ASCII without @ ( ) \ [ ] " ; : < > , and space, at most 64 characters.
_NICKNAME_REFUSED = re.compile(r"[^\x21-\x7e]|[@()\\\[\]\";:<>,]")
_ASSIGNMENT_NAMESPACE = uuid.UUID("5b0f7f0a-7c4e-4f0e-9d8b-2f2a4c1d6e11")
_GUID_ONLY = re.compile(_GUID)
_DEFAULT_GRAPH = "https://graph.microsoft.com"
_DEFAULT_ARM = "https://management.azure.com"
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class ClientSecretCredentials(pydantic.BaseModel):
    """An app registration (service principal) with a client secret."""

    model_config = OPTIONS_CONFIG

    client_id: str = pydantic.Field(min_length=1)
    """The application (client) id."""
    client_secret: SecretRef
    """The client secret: ``{env: NAME}`` or ``{file: PATH}``."""


class CertificateCredentials(pydantic.BaseModel):
    """An app registration with a certificate (PEM or PKCS12 file holding the private key)."""

    model_config = OPTIONS_CONFIG

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


class WorkloadIdentitySettings(pydantic.BaseModel):
    """Settings of the workload identity federation (AKS, GitHub Actions, ...)."""

    model_config = OPTIONS_CONFIG

    client_id: str | None = None
    """The application (client) id; null: ``$AZURE_CLIENT_ID``."""
    token_file: str | None = None
    """The projected service-account token; null: ``$AZURE_FEDERATED_TOKEN_FILE``."""


class WorkloadIdentityCredentials(pydantic.BaseModel):
    """Federated workload identity: a projected token exchanged for an Entra ID token."""

    model_config = OPTIONS_CONFIG

    workload_identity: WorkloadIdentitySettings
    """``{clientId, tokenFile}``, both optional (the environment the webhook sets is used)."""


class ManagedIdentitySettings(pydantic.BaseModel):
    """Which managed identity."""

    model_config = OPTIONS_CONFIG

    client_id: str | None = None
    """A user-assigned identity's client id; null: the system-assigned identity."""


class ManagedIdentityCredentials(pydantic.BaseModel):
    """The managed identity of the VM, App Service or container the replicator runs in."""

    model_config = OPTIONS_CONFIG

    managed_identity: ManagedIdentitySettings
    """``{clientId}`` of a user-assigned identity, or ``{}`` for the system-assigned one."""


class B2bGuestInvitation(pydantic.BaseModel):
    """Invite bound users missing in the directory as B2B guests."""

    model_config = OPTIONS_CONFIG

    enabled: bool = False
    """Invite a bound user the lookup did not find (off: a missing user is a USER_NOT_FOUND warning)."""
    send_mail: bool = False
    """Let Entra ID send the invitation mail (off: the guest redeems on first sign-in)."""
    redirect_url: str = "https://myapps.microsoft.com"
    """Where a guest lands after redeeming the invitation."""


class AzureOptions(pydantic.BaseModel):
    """The ``azure:`` block of a platform in the config file."""

    model_config = OPTIONS_CONFIG

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


@dataclass(frozen=True)
class _Group:
    id: str
    name: str
    description: str


class _NotFoundError(PermanentError):
    """HTTP 404 (or ARM PrincipalNotFound): callers that expect it catch it."""


class _UnknownPrincipalError(_NotFoundError):
    """ARM's PrincipalNotFound: Entra ID has not replicated a new group to ARM yet."""


class _ConflictError(PermanentError):
    """HTTP 409 / an object reference that already exists."""


def odata_string(value: str) -> str:
    """An OData string literal: single-quoted, a single quote inside doubled."""
    return "'" + value.replace("'", "''") + "'"


def mail_nickname(name: str) -> str:
    """A ``mailNickname`` Graph accepts for a group named ``name`` (ASCII, no special characters,
    at most 64); a hash of the name keeps changed or shortened nicknames distinct."""
    safe = _NICKNAME_REFUSED.sub("-", name).strip(".") or "group"
    if safe == name and len(safe) <= 64:
        return safe
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{safe[:55]}-{digest}"


def role_guid(role: str) -> str:
    """The role definition's GUID (lower case) of a GUID or a full ARM id."""
    return role.rstrip("/").rsplit("/", 1)[-1].lower()


def assignment_name(scope: str, group_id: str, role: str) -> str:
    """The deterministic name of the assignment of ``role`` to a group on ``scope``: a repeated PUT
    is the same assignment."""
    key = f"{scope.lower()}|{group_id.lower()}|{role_guid(role)}"
    return str(uuid.uuid5(_ASSIGNMENT_NAMESPACE, key))


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    try:
        raw = headers.get("Retry-After") or headers.get("retry-after")
    except AttributeError:
        return None
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


class _Throttled(RetryableError):
    """429/503: waited out and repeated by ``_request`` when the wait is short."""


def _graph_error(operation: str, exc: Exception) -> PlatformError | None:
    """The contract error for a kiota/msgraph/httpx/azure-identity exception, or None."""
    import httpx
    from azure.core.exceptions import ClientAuthenticationError
    from kiota_abstractions.api_error import APIError

    if isinstance(exc, APIError):
        status = int(exc.response_status_code or 0)
        code, text = "", ""
        error = getattr(exc, "error", None)
        if error is not None:
            code = str(getattr(error, "code", "") or "")
            text = str(getattr(error, "message", "") or "")
        text = text or str(exc.message or "")
        message = f"azure graph {operation}: HTTP {status}" + (f" {code}" if code else "")
        message += f": {text}" if text else ""
        if status in (429, 503):
            return _Throttled(message, retry_after=_retry_after(exc.response_headers))
        if status == 404:
            return _NotFoundError(message)
        if status == 409 or (status == 400 and "already exist" in text):
            return _ConflictError(message)
        if status >= 500 or status == 408:
            return RetryableError(message, retry_after=_retry_after(exc.response_headers))
        if status == 401:
            return PlatformConfigError(message)
        return PermanentError(message)
    if isinstance(exc, ClientAuthenticationError):
        return PlatformConfigError(f"azure {operation}: cannot sign in: {_first_line(exc)}")
    if isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError):
        return RetryableError(f"azure graph {operation}: {type(exc).__name__}: {exc}")
    if isinstance(exc, httpx.HTTPError):
        return PermanentError(f"azure graph {operation}: {type(exc).__name__}: {exc}")
    return _azure_core_error("graph", operation, exc)


def _arm_error(operation: str, exc: Exception) -> PlatformError | None:
    """The contract error for an azure-core exception raised by the ARM client, or None."""
    return _azure_core_error("arm", operation, exc)


def _azure_core_error(api: str, operation: str, exc: Exception) -> PlatformError | None:
    from azure.core import exceptions as ace

    if isinstance(exc, ace.ClientAuthenticationError) and getattr(exc, "status_code", None) is None:
        return PlatformConfigError(f"azure {operation}: cannot sign in: {_first_line(exc)}")
    if isinstance(exc, ace.HttpResponseError):
        status = int(exc.status_code or 0)
        code = ""
        if exc.error is not None:
            code = str(exc.error.code or "")
        text = _first_line(exc.error.message if exc.error is not None and exc.error.message else exc)
        message = f"azure {api} {operation}: HTTP {status}" + (f" {code}" if code else "") + f": {text}"
        headers = getattr(exc.response, "headers", None)
        if status in (429, 503):
            return _Throttled(message, retry_after=_retry_after(headers))
        if code == "PrincipalNotFound":
            return _UnknownPrincipalError(message)
        if status == 404:
            return _NotFoundError(message)
        if status == 409:
            return _ConflictError(message)
        if status >= 500 or status == 408:
            return RetryableError(message, retry_after=_retry_after(headers))
        if status == 401:
            return PlatformConfigError(message)
        return PermanentError(message)
    if isinstance(exc, ace.ServiceRequestError | ace.ServiceResponseError):
        return RetryableError(f"azure {api} {operation}: {_first_line(exc)}")
    if isinstance(exc, ace.AzureError):
        return PermanentError(f"azure {api} {operation}: {_first_line(exc)}")
    return None


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__


class _AsyncCredential:
    """The async face kiota asks for, over one sync azure-identity credential (shared with the ARM
    client, so one token cache): a token request runs in a worker thread, not in the event loop."""

    def __init__(self, credential: Any) -> None:
        self._credential = credential

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        kwargs.pop("enable_cae", None)
        if not kwargs.get("claims"):
            kwargs.pop("claims", None)
        return await asyncio.to_thread(self._credential.get_token, *scopes, **kwargs)


class AzureDriver(Driver):
    """Entra ID security groups via Microsoft Graph, RBAC role assignments via ARM."""

    options_model: ClassVar[type[pydantic.BaseModel]] = AzureOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        external_grants_default="remove",
        lookup_attribute="mail",  # userPrincipalName with UserByUsernameLookupStrategy (capabilities_for)
        has_groups=True,
        group_name_prefix="",
        max_group_name_length=256,  # a group's displayName
        group_name_pattern=_DISPLAY_NAME_PATTERN,
        ensures_users=False,  # True with b2bGuestInvitation.enabled (capabilities_for)
        role_pattern=_ROLE_PATTERN,
        role_example="acdd72a7-3385-48ef-bd42-f606fba81ae7 (a role definition id)",
    )

    options: AzureOptions

    def __init__(self, identifier: str, options: AzureOptions | Mapping[str, Any]) -> None:
        if not isinstance(options, AzureOptions):
            try:
                options = AzureOptions.model_validate(options)
            except pydantic.ValidationError as exc:
                raise PlatformConfigError(f"{identifier}: invalid azure block: {exc}") from exc
        super().__init__(identifier, options)
        self.api_calls: Counter[str] = Counter()
        """Graph and ARM requests made by this driver, by operation name (one per request/page)."""
        self._count_lock = threading.Lock()
        self._setup_lock = threading.Lock()
        self._credential: Any = None
        self._graph_client: Any = None
        self._graph_http: Any = None
        self._graph_loop: asyncio.AbstractEventLoop | None = None
        self._arm_client: Any = None
        self._lookup_lock = asyncio.Lock()
        self._invite_lock = asyncio.Lock()
        self._users: dict[str, tuple[PlatformUser, ...]] = {}
        """Casefolded lookup key -> users (empty: asked, nobody): the per-instance lookup cache."""
        self._spellings: dict[tuple[str, str], str] = {}
        """(tenant key, role GUID) -> the role string the inventory uses, so observe reports an
        assignment as the plan spells it."""
        self._granted: dict[tuple[str, str, str], str] = {}
        """(scope, group id, role GUID) -> the spelling this instance granted it under: a revoke of
        the same role definition under another spelling is not carried out."""

    @classmethod
    def capabilities_for(cls, options: Any) -> Capabilities:
        """The lookup attribute follows the lookup strategy; users are invited only with B2B guests."""
        if not isinstance(options, AzureOptions):
            return cls.capabilities
        return dataclasses.replace(
            cls.capabilities,
            lookup_attribute=options.lookup_attribute,
            ensures_users=options.b2b_guest_invitation.enabled,
        )

    # --- plumbing -------------------------------------------------------------------------------

    def _count(self, operation: str) -> None:
        with self._count_lock:
            self.api_calls[operation] += 1

    def _credentials(self) -> Any:
        with self._setup_lock:
            if self._credential is None:
                self._credential = self._make_credential()
            return self._credential

    def _make_credential(self) -> Any:
        from azure import identity

        opts = self.options
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
            raise PlatformConfigError(f"{self.identifier}: credentials: {_first_line(exc)}") from None
        except OSError as exc:
            raise PlatformConfigError(
                f"{self.identifier}: credentials: cannot read {exc.filename}: {exc.strerror}"
            ) from None

    def _graph(self) -> Any:
        """The msgraph client of the running event loop (one client per loop)."""
        loop = asyncio.get_running_loop()
        if self._graph_client is not None and self._graph_loop is loop:
            return self._graph_client
        import ssl

        import httpx
        from kiota_authentication_azure.azure_identity_authentication_provider import (
            AzureIdentityAuthenticationProvider,
        )
        from kiota_http.middleware.options import RedirectHandlerOption, RetryHandlerOption
        from msgraph.graph_request_adapter import GraphRequestAdapter
        from msgraph.graph_service_client import GraphServiceClient
        from msgraph_core import GraphClientFactory

        opts = self.options
        root = (opts.graph_url or _DEFAULT_GRAPH).rstrip("/")
        host = urlparse(root).hostname or ""
        verify: Any = ssl.create_default_context(cafile=opts.ca_file) if opts.ca_file else True
        http = httpx.AsyncClient(timeout=httpx.Timeout(opts.timeout), verify=verify)
        # Our own retry layer handles throttling (the SDK's gives up on long waits, and does not
        # pause the platform's budget); Graph does not redirect the calls made here.
        middleware_options: dict[str, Any] = {
            RetryHandlerOption.get_key(): RetryHandlerOption(max_retries=0, should_retry=False),
            RedirectHandlerOption.get_key(): RedirectHandlerOption(should_redirect=False),
        }
        http = GraphClientFactory.create_with_default_middleware(client=http, options=middleware_options)
        auth = AzureIdentityAuthenticationProvider(
            _AsyncCredential(self._credentials()),  # type: ignore[arg-type]
            scopes=[f"{root}/.default"],
            allowed_hosts=[host],
        )
        adapter = GraphRequestAdapter(auth, client=http)
        adapter.base_url = f"{root}/v1.0"
        client = GraphServiceClient(request_adapter=adapter)
        self._graph_http, self._graph_client, self._graph_loop = http, client, loop
        return client

    def _arm(self, subscription_id: str) -> Any:
        with self._setup_lock:
            if self._arm_client is None:
                self._arm_client = self._make_arm(subscription_id)
            return self._arm_client

    def _make_arm(self, subscription_id: str) -> Any:
        from azure.mgmt.authorization import AuthorizationManagementClient

        opts = self.options
        root = (opts.arm_url or _DEFAULT_ARM).rstrip("/")
        kwargs: dict[str, Any] = {
            "base_url": root,
            "credential_scopes": [f"{root}/.default"],
            "retry_total": 0,  # throttling and transient errors: _request
            "connection_timeout": opts.timeout,
            "read_timeout": opts.timeout,
        }
        if opts.ca_file:
            kwargs["connection_verify"] = opts.ca_file
        if urlparse(root).scheme == "http" and urlparse(root).hostname in _LOCAL_HOSTS:
            kwargs["enforce_https"] = False  # a local emulator only: never a token over http elsewhere
        if self._credential is None:  # _credentials() runs first
            raise PlatformConfigError(f"{self.identifier}: no credential")
        return AuthorizationManagementClient(self._credential, subscription_id, **kwargs)

    async def _request(
        self, operation: str, call: Callable[[], Awaitable[T]], translate: Callable[[str, Exception], Any]
    ) -> T:
        """One request within the platform's budget: counted, a short Retry-After waited out and
        the request repeated, errors mapped to the contract's types."""
        attempt = 0
        while True:
            attempt += 1
            self._count(operation)
            async with self.budget:
                try:
                    return await call()
                except PlatformError as exc:
                    error: PlatformError = exc
                except Exception as exc:
                    mapped = translate(operation, exc)
                    if mapped is None:
                        raise
                    error = mapped
            if isinstance(error, RetryableError) and error.retry_after is not None:
                self.budget.pause(error.retry_after)
            if not isinstance(error, _Throttled):
                raise error
            wait = error.retry_after if error.retry_after is not None else min(2.0**attempt, 30.0)
            if wait > self.options.max_throttle_wait or attempt >= self.options.throttle_attempts:
                raise RetryableError(
                    f"{error} (throttled; retry after {wait:g} s)", retry_after=wait
                ) from None
            await asyncio.sleep(wait)

    async def _graph_call(self, operation: str, call: Callable[[Any], Awaitable[T]]) -> T:
        async def run() -> T:
            return await call(self._graph())

        if self._credential is None:
            await asyncio.to_thread(self._credentials)
        return await self._request(operation, run, _graph_error)

    async def _arm_call(self, operation: str, subscription_id: str, call: Callable[[Any], T]) -> T:
        if self._arm_client is None:  # the first one imports the SDK: not in the event loop
            await asyncio.to_thread(self._credentials)
            await asyncio.to_thread(self._arm, subscription_id)
        client = self._arm(subscription_id)

        async def run() -> T:
            return await asyncio.to_thread(call, client)

        return await self._request(operation, run, _arm_error)

    async def _graph_pages(
        self, operation: str, first: Callable[[Any], Awaitable[Any]], builder: Callable[[Any], Any]
    ) -> list[Any]:
        """Every item of a Graph list: ``@odata.nextLink`` followed to the end (each page counted)."""
        page = await self._graph_call(operation, first)
        items: list[Any] = []
        seen: set[str] = set()
        while True:
            items.extend((page.value if page is not None else None) or [])
            link = page.odata_next_link if page is not None else None
            if not link:
                return items
            if link in seen:
                raise PermanentError(f"azure graph {operation}: the server repeated a next link")
            seen.add(link)

            async def following(client: Any, link: str = link) -> Any:
                return await builder(client).with_url(link).get()

            page = await self._graph_call(operation, following)

    async def _eventually(
        self,
        what: str,
        call: Callable[[], Awaitable[T]],
        unknown: type[_NotFoundError] = _NotFoundError,
    ) -> T:
        """``call`` while Entra ID does not know a just-created object yet (``unknown``: Graph's 404,
        ARM's PrincipalNotFound): a few attempts with a short, doubling wait, then retryable."""
        wait = self.options.consistency_wait
        for attempt in range(1, self.options.consistency_attempts + 1):
            try:
                return await call()
            except unknown as exc:
                if attempt >= self.options.consistency_attempts:
                    raise RetryableError(
                        f"{exc} ({what}: not visible after {attempt} attempts; Entra ID replicates "
                        "new objects with a delay)"
                    ) from None
            await asyncio.sleep(wait)
            wait = min(wait * 2, 30.0)
        raise AssertionError("unreachable")

    # --- scope and roles ------------------------------------------------------------------------

    def _subscription(self, tenant: TenantRef) -> str:
        if self.options.scope == "resourceGroup":
            assert self.options.subscription_id is not None  # the options validator checks it
            return self.options.subscription_id
        return tenant.local_id

    def _scope(self, tenant: TenantRef) -> str:
        """The tenant's ARM id."""
        if self.options.scope == "resourceGroup":
            return f"/subscriptions/{self._subscription(tenant)}/resourceGroups/{tenant.local_id}"
        return f"/subscriptions/{tenant.local_id}"

    def _role_definition_id(self, tenant: TenantRef, role: str) -> str:
        """The role definition as ARM wants it for the tenant's scope: by its GUID under the tenant's
        subscription (as ``az role assignment create`` does), whatever path the inventory wrote."""
        return (
            f"/subscriptions/{self._subscription(tenant)}/providers/Microsoft.Authorization/"
            f"roleDefinitions/{role_guid(role)}"
        )

    def _spell(self, tenant: TenantRef, role_definition_id: str) -> str:
        guid = role_guid(role_definition_id)
        return self._spellings.get((tenant.key, guid), guid)

    # --- reads ----------------------------------------------------------------------------------

    async def _lookup(self, attribute: str, values: Sequence[str], guests_only: bool) -> list[Any]:
        from msgraph.generated.users.users_request_builder import UsersRequestBuilder

        select = ["id", "mail", "userPrincipalName"] + (["userType"] if guests_only else [])
        expression = f"{attribute} in ({', '.join(odata_string(v) for v in values)})"
        query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
            filter=expression, select=select, top=999
        )

        async def first(client: Any) -> Any:
            from kiota_abstractions.base_request_configuration import RequestConfiguration

            return await client.users.get(request_configuration=RequestConfiguration(query_parameters=query))

        rows = await self._graph_pages(
            "list_guests" if guests_only else "list_users", first, lambda c: c.users
        )
        if guests_only:
            rows = [r for r in rows if (r.user_type or "").lower() == "guest"]
        return rows

    def _platform_user(self, row: Any, attribute: str) -> PlatformUser:
        value = row.mail if attribute == "mail" else row.user_principal_name
        return PlatformUser(id=str(row.id), name=str(value or row.id))

    async def _get_group(self, group_id: str) -> _Group | None:
        from msgraph.generated.groups.item.group_item_request_builder import GroupItemRequestBuilder

        query = GroupItemRequestBuilder.GroupItemRequestBuilderGetQueryParameters(
            select=["id", "displayName", "description"]
        )

        async def call(client: Any) -> Any:
            from kiota_abstractions.base_request_configuration import RequestConfiguration

            return await client.groups.by_group_id(group_id).get(
                request_configuration=RequestConfiguration(query_parameters=query)
            )

        try:
            row = await self._graph_call("get_group", call)
        except _NotFoundError:
            return None
        return _Group(str(row.id), str(row.display_name or ""), str(row.description or ""))

    async def _groups_by_id(self, group_ids: Sequence[str]) -> dict[str, _Group]:
        """The groups among ``group_ids`` that exist, by lower-case id: ``GET /groups?$filter=id in
        (...)`` with at most 15 ids a request (every page followed). A group deleted by hand is
        simply not listed (as ``get_group`` would answer 404); its description (our marker) comes
        with it, so one request replaces a ``get_group`` per group."""
        from msgraph.generated.groups.groups_request_builder import GroupsRequestBuilder

        found: dict[str, _Group] = {}
        wanted = sorted({gid.lower() for gid in group_ids})
        for batch in _batches(wanted):
            query = GroupsRequestBuilder.GroupsRequestBuilderGetQueryParameters(
                filter=f"id in ({', '.join(odata_string(gid) for gid in batch)})",
                select=["id", "displayName", "description"],
            )

            async def first(client: Any, query: Any = query) -> Any:
                from kiota_abstractions.base_request_configuration import RequestConfiguration

                return await client.groups.get(
                    request_configuration=RequestConfiguration(query_parameters=query)
                )

            for r in await self._graph_pages("list_groups", first, lambda c: c.groups):
                if str(r.id).lower() in batch:
                    found[str(r.id).lower()] = _Group(
                        str(r.id), str(r.display_name or ""), str(r.description or "")
                    )
        return found

    async def _groups_named(self, name: str) -> list[_Group]:
        from msgraph.generated.groups.groups_request_builder import GroupsRequestBuilder

        query = GroupsRequestBuilder.GroupsRequestBuilderGetQueryParameters(
            filter=f"displayName eq {odata_string(name)}", select=["id", "displayName", "description"]
        )

        async def first(client: Any) -> Any:
            from kiota_abstractions.base_request_configuration import RequestConfiguration

            return await client.groups.get(request_configuration=RequestConfiguration(query_parameters=query))

        rows = await self._graph_pages("find_group", first, lambda c: c.groups)
        return [
            _Group(str(r.id), str(r.display_name or ""), str(r.description or ""))
            for r in rows
            if r.display_name == name
        ]

    async def _group_by_name(self, name: str, tenant: TenantRef) -> _Group | None:
        """The group named ``name``: the one marked for ``tenant`` when several share the name."""
        groups = await self._groups_named(name)
        ours = [g for g in groups if is_marked_for(g.description, tenant)]
        candidates = ours or groups
        return candidates[0] if candidates else None

    async def _members(self, group_id: str) -> list[PlatformUser]:
        from msgraph.generated.groups.item.members.members_request_builder import MembersRequestBuilder

        query = MembersRequestBuilder.MembersRequestBuilderGetQueryParameters(
            select=["id", "mail", "userPrincipalName"], top=self.options.page_size
        )

        async def first(client: Any) -> Any:
            from kiota_abstractions.base_request_configuration import RequestConfiguration

            return await client.groups.by_group_id(group_id).members.get(
                request_configuration=RequestConfiguration(query_parameters=query)
            )

        rows = await self._graph_pages(
            "list_members", first, lambda c: c.groups.by_group_id(group_id).members
        )
        attribute = self.options.lookup_attribute
        members = []
        for row in rows:
            # Nested groups, devices, service principals: reported under their id, so the removal
            # policy takes them out like any member the replicator did not add.
            value = getattr(row, "mail" if attribute == "mail" else "user_principal_name", None)
            members.append(PlatformUser(id=str(row.id), name=str(value or row.id)))
        return members

    async def _assignments(self, tenant: TenantRef, group_id: str) -> list[Any]:
        """Every role assignment of the group on exactly the tenant's scope (ARM lists inherited ones
        from above and ones below as well: left out)."""
        scope = self._scope(tenant)
        filter_ = f"principalId eq {odata_string(group_id)}"
        holder: dict[str, Any] = {}

        def step(client: Any) -> tuple[list[Any], bool]:
            """One page (one request); True while ARM names a next page."""
            if "pages" not in holder:
                holder["pages"] = client.role_assignments.list_for_scope(scope, filter=filter_).by_page()
            pages = holder["pages"]
            items = list(next(pages))
            return items, bool(getattr(pages, "continuation_token", None))

        rows: list[Any] = []
        subscription = self._subscription(tenant)
        more = True
        while more:
            page, more = await self._arm_call("list_role_assignments", subscription, step)
            rows.extend(page)
        return [
            r
            for r in rows
            if (r.scope or "").lower() == scope.lower() and (r.principal_id or "").lower() == group_id.lower()
        ]

    async def _scope_assignments(self, tenant: TenantRef) -> dict[str, list[Any]]:
        """Every role assignment on exactly the tenant's scope, by lower-case principal id: ONE list
        of the scope (``$filter=atScope()``: at the scope or above it, every page followed; the
        ones above are inherited, not the tenant's, and left out) for all groups of an observe."""
        scope = self._scope(tenant)
        holder: dict[str, Any] = {}

        def step(client: Any) -> tuple[list[Any], bool]:
            """One page (one request); True while ARM names a next page."""
            if "pages" not in holder:
                holder["pages"] = client.role_assignments.list_for_scope(scope, filter="atScope()").by_page()
            pages = holder["pages"]
            items = list(next(pages))
            return items, bool(getattr(pages, "continuation_token", None))

        subscription = self._subscription(tenant)
        by_principal: dict[str, list[Any]] = {}
        more = True
        while more:
            page, more = await self._arm_call("list_role_assignments", subscription, step)
            for r in page:
                if (r.scope or "").lower() == scope.lower() and r.principal_id:
                    by_principal.setdefault(str(r.principal_id).lower(), []).append(r)
        return by_principal

    async def _observe_group(
        self, tenant: TenantRef, group: _Group, alias: str, assignments: Sequence[Any]
    ) -> ObservedGroup:
        members = await self._members(group.id)
        roles = {self._spell(tenant, a.role_definition_id) for a in assignments if a.role_definition_id}
        return ObservedGroup(
            id=group.id,
            name=group.name,
            alias=alias,
            members=frozenset(members),
            roles=frozenset(roles),
        )

    # --- apply ----------------------------------------------------------------------------------

    async def _create_group(self, tenant: TenantRef, name: str) -> str:
        async def existing() -> str | None:
            group = await self._group_by_name(name, tenant)
            if group is None:
                return None
            if is_marked_for(group.description, tenant):
                return group.id
            raise ForeignObjectError(
                f"azure create_group: a group named {name!r} already exists and is not ours "
                f"(id {group.id}, for {tenant.key})"
            )

        found = await existing()
        if found is not None:
            return found
        from msgraph.generated.models.group import Group

        body = Group(
            odata_type="#microsoft.graph.group",
            display_name=name,
            mail_nickname=mail_nickname(name),
            mail_enabled=False,
            security_enabled=True,
            description=owner_marker(tenant),
        )
        unit = self.options.administrative_unit_id

        async def create(client: Any) -> Any:
            if unit:
                return await client.directory.administrative_units.by_administrative_unit_id(
                    unit
                ).members.post(body)
            return await client.groups.post(body)

        row = await self._graph_call("create_group", create)
        if row is None or not row.id:
            raise PermanentError(f"azure create_group: Graph answered without the new group's id ({name!r})")
        return str(row.id)

    async def _add_member(self, group_id: str, user: PlatformUser) -> None:
        from msgraph.generated.models.reference_create import ReferenceCreate

        root = (self.options.graph_url or _DEFAULT_GRAPH).rstrip("/")
        body = ReferenceCreate(odata_id=f"{root}/v1.0/directoryObjects/{user.id}")

        async def add(client: Any) -> None:
            await client.groups.by_group_id(group_id).members.ref.post(body)

        async def attempt() -> None:
            try:
                await self._graph_call("add_member", add)
            except _ConflictError:
                return  # already a member

        await self._eventually(f"group {group_id} or user {user.name}", attempt)

    async def _remove_member(self, group_id: str, user: PlatformUser) -> None:
        async def remove(client: Any) -> None:
            await client.groups.by_group_id(group_id).members.by_directory_object_id(user.id).ref.delete()

        try:
            await self._graph_call("remove_member", remove)
        except _NotFoundError:
            return

    async def _grant(self, tenant: TenantRef, role: str, group_id: str) -> None:
        from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters

        scope = self._scope(tenant)
        name = assignment_name(scope, group_id, role)
        parameters = RoleAssignmentCreateParameters(
            role_definition_id=self._role_definition_id(tenant, role),
            principal_id=group_id,
            principal_type="Group",
            description=owner_marker(tenant),
        )

        def create(client: Any) -> Any:
            return client.role_assignments.create(scope, name, parameters)

        async def attempt() -> None:
            try:
                await self._arm_call("create_role_assignment", self._subscription(tenant), create)
            except _ConflictError as exc:
                if "RoleAssignmentExists" not in str(exc):
                    raise

        await self._eventually(f"group {group_id} in ARM", attempt, _UnknownPrincipalError)
        self._granted[(scope.lower(), group_id.lower(), role_guid(role))] = role
        self._spellings.setdefault((tenant.key, role_guid(role)), role)

    async def _revoke(self, tenant: TenantRef, role: str, group_id: str) -> None:
        scope = self._scope(tenant)
        guid = role_guid(role)
        granted_as = self._granted.get((scope.lower(), group_id.lower(), guid))
        if granted_as is not None and granted_as != role:
            return  # granted in this run under another spelling of the same role definition
        for assignment in await self._assignments(tenant, group_id):
            if role_guid(assignment.role_definition_id or "") != guid:
                continue

            def delete(client: Any, name: str = str(assignment.name)) -> Any:
                return client.role_assignments.delete(scope, name)

            try:
                await self._arm_call("delete_role_assignment", self._subscription(tenant), delete)
            except _NotFoundError:
                continue

    async def _delete_group(self, tenant: TenantRef, name: str, group_id: str | None) -> None:
        if group_id is None:
            group = await self._group_by_name(name, tenant)
            if group is not None and not is_marked_for(group.description, tenant):
                raise ForeignObjectError(f"azure delete_group: group {name!r} ({group.id}) is not ours")
        else:
            group = await self._get_group(group_id)
            if group is not None and not is_marked(group.description):
                raise ForeignObjectError(f"azure delete_group: group {name!r} ({group.id}) is not ours")
        if group is None:
            return
        gid = group.id

        async def delete(client: Any) -> None:
            await client.groups.by_group_id(gid).delete()

        try:
            await self._graph_call("delete_group", delete)
        except _NotFoundError:
            return

    async def _ensure_user(self, euid: str) -> str:
        """Invite ``euid`` (an e-mail address) as a B2B guest; Graph returns the existing guest when
        the address was invited before."""
        b2b = self.options.b2b_guest_invitation
        if not b2b.enabled:
            raise PermanentError("azure ensure_user: b2bGuestInvitation is not enabled: nobody is invited")
        from msgraph.generated.models.invitation import Invitation

        body = Invitation(
            invited_user_email_address=euid,
            invite_redirect_url=b2b.redirect_url,
            send_invitation_message=b2b.send_mail,
            invited_user_type="Guest",
        )

        async def invite(client: Any) -> Any:
            return await client.invitations.post(body)

        async with self._invite_lock:  # several tenants of a run may want the same guest at once
            known = self._users.get(euid.casefold())
            if known and len(known) == 1:
                return known[0].id  # invited (or found) earlier in this run
            row = await self._graph_call("invite_user", invite)
            invited = row.invited_user if row is not None else None
            if invited is None or not invited.id:
                raise PermanentError(f"azure invite_user: Graph answered without the guest's id ({euid!r})")
            user = PlatformUser(id=str(invited.id), name=euid)
            self._users[euid.casefold()] = (user,)
            return user.id

    # --- the contract ---------------------------------------------------------------------------

    async def lookup_users(self, euids: Sequence[str]) -> dict[str, tuple[PlatformUser, ...]]:
        if not euids:
            return {}
        attribute = self.options.lookup_attribute
        async with self._lookup_lock:
            wanted = sorted({e.casefold(): e for e in euids if e.casefold() not in self._users}.items())
            asked = [value for _, value in wanted]
            found: dict[str, list[PlatformUser]] = {key: [] for key, _ in wanted}
            for batch in _batches(asked):
                for row in await self._lookup(attribute, batch, guests_only=False):
                    user = self._platform_user(row, attribute)
                    if user.name.casefold() in found:
                        found[user.name.casefold()].append(user)
            if self.options.b2b_guest_invitation.enabled and attribute != "mail":
                # An invited guest's userPrincipalName is rewritten (x_domain#EXT#@...): find the
                # guests by the invited address, their mail.
                missing = [value for key, value in wanted if not found[key]]
                for batch in _batches(missing):
                    for row in await self._lookup("mail", batch, guests_only=True):
                        user = self._platform_user(row, "mail")
                        if user.name.casefold() in found:
                            found[user.name.casefold()].append(user)
            for key, users in found.items():
                self._users[key] = tuple(sorted(set(users)))
            return {euid: self._users[euid.casefold()] for euid in euids}

    async def observe(
        self, tenant: TenantRef, owned: Sequence[OwnedGroup], desired_names: Mapping[str, str]
    ) -> ObservedTenant:
        for record in owned:
            for role in record.roles:
                self._spellings.setdefault((tenant.key, role_guid(role)), role)

        # The recorded groups in one request per 15 (existence and our marker, instead of a
        # get_group each); an id Graph would refuse in a filter is still read on its own.
        recorded = [r.platform_id for r in owned if r.platform_id is not None]
        batched = [gid for gid in recorded if _GUID_ONLY.fullmatch(gid)]
        known = await self._groups_by_id(batched) if batched else {}
        listed = {gid.lower() for gid in batched}

        async def by_id(group_id: str) -> _Group | None:
            if group_id.lower() in listed:
                return known.get(group_id.lower())
            return await self._get_group(group_id)

        async def by_name(name: str) -> _Group | None:
            return await self._group_by_name(name, tenant)

        # The scope's role assignments: read once, when the first group of ours is observed.
        at_scope: dict[str, list[Any]] | None = None

        async def observe_one(group: _Group, alias: str) -> ObservedGroup:
            nonlocal at_scope
            if at_scope is None:
                at_scope = await self._scope_assignments(tenant)
            return await self._observe_group(tenant, group, alias, at_scope.get(group.id.lower(), ()))

        return await observe_marked_groups(tenant, owned, desired_names, by_id, by_name, observe_one)

    async def apply(self, tenant: TenantRef, change: Change, group_id: str | None) -> str | None:
        action = change.action
        if action is Action.CREATE_GROUP:
            return await self._create_group(tenant, change.group)
        if action is Action.ENSURE_USER:
            if not change.euid:
                raise PermanentError("azure ensure_user: the change names no euid")
            return await self._ensure_user(change.euid)
        if action is Action.DELETE_GROUP:
            await self._delete_group(tenant, change.group, group_id)
            return None
        if group_id is None:
            raise PermanentError(f"azure {action}: no platform id for group {change.group!r}")
        if action in (Action.ADD_MEMBER, Action.REMOVE_MEMBER):
            if change.user is None:
                raise PermanentError(f"azure {action}: change for {change.group!r} names no user")
            if action is Action.ADD_MEMBER:
                await self._add_member(group_id, change.user)
            else:
                await self._remove_member(group_id, change.user)
            return None
        if action in (Action.GRANT, Action.REVOKE):
            if not change.role:
                raise PermanentError(f"azure {action}: change for {change.group!r} names no role")
            if action is Action.GRANT:
                await self._grant(tenant, change.role, group_id)
            else:
                await self._revoke(tenant, change.role, group_id)
            return None
        raise PermanentError(f"azure: unknown action {action!r}")

    async def close(self) -> None:
        http, self._graph_http, self._graph_client = self._graph_http, None, None
        if http is not None:
            with contextlib.suppress(RuntimeError):  # its event loop is gone: nothing left to release
                await http.aclose()
        with self._setup_lock:
            arm, self._arm_client = self._arm_client, None
            credential, self._credential = self._credential, None
        if arm is not None:
            await asyncio.to_thread(arm.close)
        if credential is not None and hasattr(credential, "close"):
            await asyncio.to_thread(credential.close)


def _batches(values: Sequence[str]) -> list[list[str]]:
    return [list(values[i : i + MAX_FILTER_VALUES]) for i in range(0, len(values), MAX_FILTER_VALUES)]
