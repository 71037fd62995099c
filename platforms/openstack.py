"""OpenStack (Keystone v3) driver.

A tenant is a Keystone project (``localId`` = the project id). Groups live in one configured
Keystone domain (``groupDomain``) and are named by the platform's group name pattern (no prefix);
a role is a Keystone role *name* assigned to the group on the project. Users are matched by
``User.name`` in ``userDomain`` (case-insensitive). With ``federatedIdp.enabled`` a bound user
missing in Keystone is created in the federated user domain with the ``federated`` attribute
(identity provider, protocol, unique id = the transformed euid), so that the user's first login
through the IdP maps to it. openstacksdk is imported lazily, inside methods, so importing this
module is cheap.

Every Keystone request goes through ``OpenstackDriver._call``, which counts it in
``OpenstackDriver.api_calls`` under an operation name (one count per request; the token request
and version discovery made by keystoneauth are not counted) and maps errors to the contract's
error types. Keystone lists are not paged (a ``list_limit`` cut is reported as ``truncated``,
which fails the read rather than return part of it); ``links.next`` is followed where a server
sends it.

API calls per operation (names as counted):

``lookup_users``
    ``find_domain`` 1 per configured domain name (memoised), ``list_users`` 1 for ``userDomain``
    (+ 1 for the federated user domain when it differs), once per driver instance: the
    case-insensitive index is kept and every later lookup on the instance makes no call.
``observe`` (per tenant)
    ``list_role_assignments`` 1 (``scope.project.id`` = the project, ``include_names``; every
    page), only when at least one group is ours; filtered to our groups here.
``observe`` (per owned group)
    ``get_group`` 1 (a pending record without id: ``find_group`` 1), ``list_group_users`` 1.
    ``get_group`` stays: the ownership marker is the group's description, and only the group
    itself carries it (the member list and the role assignments, even with ``include_names``,
    do not), so a recorded group whose marker was removed by hand is still seen as foreign.
``observe`` (per desired name that no owned record has)
    ``find_domain`` (memoised) + ``find_group`` 1.
    A no-op observe of a tenant with G owned groups: 2 G + 1 calls.
``prepare`` (once per run, when the run names >= ``groupScanThreshold`` groups)
    ``find_domain`` (memoised) + ``list_groups`` 1 per page (``GET /v3/groups?domain_id=`` of
    ``groupDomain``; Keystone does not page: 1). Observe then takes every ``get_group`` and
    ``find_group`` answer from the scan, which carries the descriptions (markers): an owned id the
    scan lacks is still read with ``get_group`` (deleted by hand: vanished), a name it lacks is
    free (``create_group`` still asks ``find_group`` before it creates). A no-op observe of a
    tenant with G owned groups: G + 1 calls. A group in the scan that is deleted before observe
    reads its members (``list_group_users`` 404) is dropped from the scan and the tenant is
    observed again (the group and member reads made so far are repeated, the project's assignments
    are not; the group then costs ``get_group`` 1: vanished).
    The scan is dropped at every ``prepare``; a failed or truncated scan leaves none (observe
    reads group by group).
``apply``
    create_group:  ``find_group`` 1, + ``create_group`` 1 when it does not exist
    add_member:    ``add_group_user`` 1 (Keystone's PUT is idempotent)
    remove_member: ``remove_group_user`` 1 (404 = not a member: success)
    grant:         ``list_roles`` 1 per driver (memoised) + ``assign_group_role`` 1 (idempotent PUT)
    revoke:        ``list_roles`` 1 per driver (memoised) + ``unassign_group_role`` 1 (404: success)
    delete_group:  ``get_group`` 1 (group id unknown: ``find_group`` 1) + ``delete_group`` 1
    ensure_user:   ``find_federated_user`` 1 (``GET /v3/users?idp_id=&unique_id=``), then
                   ``find_user`` 1 (by name in the federated user domain), then ``create_user`` 1;
                   each step only when the one before found nobody.

Ownership: every group this driver creates has the description
``"<OWNER_MARKER> tenant=<tenant key>"``. A group recorded in the state store counts as ours when
its description starts with the marker; a group found only by name (crash leftover) counts as
ours only when the marker also names this tenant.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

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
from platforms.kit import (
    GoneSinceScan,
    GroupScan,
    is_marked,
    is_marked_for,
    observe_marked_groups,
    owner_marker,
)
from platforms.secrets import SecretRef


class PasswordCredentials(pydantic.BaseModel):
    """Log in as a Keystone user (password authentication, project-scoped token)."""

    model_config = OPTIONS_CONFIG

    username: str = pydantic.Field(min_length=1)
    """The Keystone user the replicator acts as (it needs the admin role, or a policy that allows
    managing groups, users and role assignments)."""
    password: SecretRef
    """The user's password: ``{env: NAME}`` or ``{file: PATH}``."""
    user_domain: str = "Default"
    """Domain (name) of that user."""
    project_name: str = "admin"
    """Project the token is scoped to."""
    project_domain: str = "Default"
    """Domain (name) of that project."""


class ApplicationCredentials(pydantic.BaseModel):
    """Log in with a Keystone application credential."""

    model_config = OPTIONS_CONFIG

    application_credential_id: str = pydantic.Field(min_length=1)
    """The application credential's id."""
    application_credential_secret: SecretRef
    """Its secret: ``{env: NAME}`` or ``{file: PATH}``."""


class CloudCredentials(pydantic.BaseModel):
    """Take authentication from a ``clouds.yaml`` entry (openstacksdk's usual search path)."""

    model_config = OPTIONS_CONFIG

    cloud: str = pydantic.Field(min_length=1)
    """Name of the cloud in ``clouds.yaml``."""


class FederatedIdp(pydantic.BaseModel):
    """Create bound users missing in Keystone as federated users of an identity provider."""

    model_config = OPTIONS_CONFIG

    enabled: bool = False
    """Create a bound user missing in Keystone (off: a missing user is a USER_NOT_FOUND warning)."""
    idp_id: str | None = None
    """The Keystone identity provider id users log in through (required when enabled)."""
    protocol_id: str = "openid"
    """The federation protocol of that identity provider."""
    user_domain: str = "MeshUsers"
    """Domain (name) the created users go to; it must exist."""
    unique_id: Literal["euid"] = "euid"
    """What becomes the user's federated ``unique_id`` (the transformed euid, which is also the
    user's name)."""

    @pydantic.model_validator(mode="after")
    def _idp_when_enabled(self) -> FederatedIdp:
        if self.enabled and not self.idp_id:
            raise ValueError("federatedIdp.enabled needs idpId")
        return self


class OpenstackOptions(pydantic.BaseModel):
    """The ``openstack:`` block of a platform in the config file."""

    model_config = OPTIONS_CONFIG

    auth_url: str | None = None
    """Keystone's v3 URL, e.g. ``https://keystone.example.com/v3`` (any endpoint: an emulator, a
    sovereign cloud). Not needed with ``cloud`` / ``credentials.cloud``."""
    cloud: str | None = None
    """A ``clouds.yaml`` entry to take authentication (and URL) from, instead of ``credentials``."""
    group_domain: str = "Default"
    """Keystone domain (name, or id) the groups are created in."""
    user_domain: str = "Default"
    """Keystone domain (name, or id) users are looked up in, by ``User.name``."""
    credentials: PasswordCredentials | ApplicationCredentials | CloudCredentials | None = None
    """How the replicator logs in: ``{username, password, userDomain, projectName, projectDomain}``,
    ``{applicationCredentialId, applicationCredentialSecret}`` or ``{cloud: NAME}``."""
    federated_idp: FederatedIdp = FederatedIdp()
    """Create bound users missing in Keystone as federated users (off by default)."""
    region_name: str | None = None
    """Region of the identity endpoint in the catalog (null: any)."""
    interface: Literal["public", "internal", "admin"] = "public"
    """Which catalog interface of the identity service to call."""
    endpoint_override: str | None = None
    """Call the identity API here instead of the catalog's endpoint (e.g. when the catalog names
    internal addresses)."""
    verify: bool = True
    """Verify the server's TLS certificate."""
    ca_file: str | None = None
    """A CA bundle to verify the server's certificate with (null: the system's)."""
    timeout: float = pydantic.Field(default=60.0, gt=0)
    """Seconds per request before it is abandoned (retryable)."""
    group_scan_threshold: int = pydantic.Field(default=20, ge=0)
    """A run whose observations name at least this many groups reads every group of
    ``groupDomain`` first (one ``GET /v3/groups?domain_id=``) instead of one ``GET /v3/groups/{id}``
    (or lookup by name) per group. 0 = never scan."""

    @pydantic.model_validator(mode="after")
    def _how_to_log_in(self) -> OpenstackOptions:
        from_cloud = self.cloud is not None or isinstance(self.credentials, CloudCredentials)
        if not from_cloud and (self.auth_url is None or self.credentials is None):
            raise ValueError("give authUrl and credentials, or cloud (clouds.yaml)")
        return self


class _NotFoundError(PermanentError):
    """HTTP 404: callers that expect it catch it."""


class _ConflictError(PermanentError):
    """HTTP 409 (a name is taken, a duplicate)."""


@dataclass(frozen=True)
class _Group:
    id: str
    name: str
    description: str


def _group(item: Mapping[str, Any]) -> _Group:
    return _Group(str(item["id"]), str(item.get("name") or ""), str(item.get("description") or ""))


def _http_error(operation: str, status: int, body: Any, retry_after: str | None) -> PlatformError:
    text = ""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            text = str(err.get("message") or "")
    message = f"openstack {operation}: HTTP {status}" + (f": {text}" if text else "")
    if status == 404:
        return _NotFoundError(message)
    if status == 409:
        return _ConflictError(message)
    if status == 429 or status >= 500:
        wait: float | None = None
        if retry_after:
            try:
                wait = float(retry_after)
            except ValueError:
                wait = None
        return RetryableError(message, retry_after=wait)
    if status == 401:
        return PlatformConfigError(message)
    return PermanentError(message)


def _translate(operation: str, exc: Exception) -> PlatformError | None:
    """The contract error for a keystoneauth/openstacksdk exception, or None when ``exc`` is not one."""
    from keystoneauth1 import exceptions as ksa
    from openstack import exceptions as sdk

    if isinstance(exc, ksa.HttpError):
        status = int(getattr(exc, "http_status", 0) or 0)
        return _http_error(operation, status, None, getattr(exc, "retry_after", None))
    if isinstance(exc, ksa.SSLError):
        return PermanentError(f"openstack {operation}: TLS: {exc}")
    if isinstance(exc, ksa.ConnectionError | ksa.ConnectTimeout):
        return RetryableError(f"openstack {operation}: cannot reach Keystone: {exc}")
    if isinstance(exc, ksa.RetriableConnectionFailure):
        return RetryableError(f"openstack {operation}: {exc}")
    if isinstance(exc, ksa.AuthorizationFailure | ksa.MissingAuthPlugin | ksa.MissingRequiredOptions):
        return PlatformConfigError(f"openstack {operation}: cannot log in: {type(exc).__name__}")
    if isinstance(exc, ksa.NoMatchingPlugin | ksa.EndpointNotFound | ksa.EmptyCatalog | ksa.DiscoveryFailure):
        return PlatformConfigError(f"openstack {operation}: {exc}")
    if isinstance(exc, sdk.ConfigException):
        return PlatformConfigError(f"openstack {operation}: {exc}")
    if isinstance(exc, ksa.ClientException | sdk.SDKException):
        return PermanentError(f"openstack {operation}: {exc}")
    return None


class OpenstackDriver(Driver):
    """Keystone: groups in a domain, group role assignments on projects, optional federated users."""

    options_model: ClassVar[type[pydantic.BaseModel]] = OpenstackOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        external_grants_default="keep",
        lookup_attribute="name",
        has_groups=True,
        group_name_prefix="",
        max_group_name_length=64,  # Keystone's group.name column
        group_name_pattern=None,
        ensures_users=True,  # with federatedIdp.enabled (see capabilities_for)
        role_pattern=None,
        role_example="member",
    )

    options: OpenstackOptions

    def __init__(self, identifier: str, options: OpenstackOptions | Mapping[str, Any]) -> None:
        if not isinstance(options, OpenstackOptions):
            try:
                options = OpenstackOptions.model_validate(options)
            except pydantic.ValidationError as exc:
                raise PlatformConfigError(f"{identifier}: invalid openstack block: {exc}") from exc
        super().__init__(identifier, options)
        self.api_calls: Counter[str] = Counter()
        """Keystone requests made by this driver, by operation name (one per request)."""
        self._conn: Any = None
        self._conn_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._scan_lock = asyncio.Lock()
        self._meta_lock = asyncio.Lock()
        self._domains: dict[str, str] = {}
        self._roles: dict[str, str] | None = None
        self._users_by_key: dict[str, list[PlatformUser]] | None = None
        self._scan: GroupScan[_Group] | None = None

    @classmethod
    def capabilities_for(cls, options: Any) -> Capabilities:
        """Users are created only with ``federatedIdp.enabled``."""
        enabled = isinstance(options, OpenstackOptions) and options.federated_idp.enabled
        return dataclasses.replace(cls.capabilities, ensures_users=enabled)

    # --- plumbing -------------------------------------------------------------------------------

    def _count(self, operation: str) -> None:
        with self._count_lock:
            self.api_calls[operation] += 1

    def _connection(self) -> Any:
        with self._conn_lock:
            if self._conn is None:
                self._conn = self._connect()
            return self._conn

    def _connect(self) -> Any:
        import openstack.connection

        opts = self.options
        common: dict[str, Any] = {
            "verify": opts.ca_file if (opts.verify and opts.ca_file) else opts.verify,
            "interface": opts.interface,
            "api_timeout": opts.timeout,
        }
        if opts.region_name:
            common["region_name"] = opts.region_name
        if opts.endpoint_override:
            common["identity_endpoint_override"] = opts.endpoint_override
        creds = opts.credentials
        cloud = opts.cloud or (creds.cloud if isinstance(creds, CloudCredentials) else None)
        auth: dict[str, Any] = {"auth_url": opts.auth_url}
        auth_type = "v3password"
        try:
            if isinstance(creds, PasswordCredentials):
                auth.update(
                    username=creds.username,
                    password=creds.password.resolve(),
                    user_domain_name=creds.user_domain,
                    project_name=creds.project_name,
                    project_domain_name=creds.project_domain,
                )
            elif isinstance(creds, ApplicationCredentials):
                auth.update(
                    application_credential_id=creds.application_credential_id,
                    application_credential_secret=creds.application_credential_secret.resolve(),
                )
                auth_type = "v3applicationcredential"
        except ValueError as exc:  # SecretRef.resolve: names where the secret is, never its value
            raise PlatformConfigError(f"{self.identifier}: credentials: {exc}") from None
        try:
            if cloud is not None:
                return openstack.connection.Connection(cloud=cloud, **common)
            return openstack.connection.Connection(
                auth_type=auth_type,
                auth=auth,
                **common,  # no cloud: clouds.yaml and OS_* are not read
            )
        except PlatformError:
            raise
        except Exception as exc:
            mapped = _translate("connect", exc)
            if mapped is None:
                raise
            raise mapped from None

    def _call_sync(
        self, operation: str, method: str, path: str, params: dict[str, Any] | None, body: Any
    ) -> Any:
        self._count(operation)
        try:
            identity = self._connection().identity
            kwargs: dict[str, Any] = {"raise_exc": False}
            if params:
                kwargs["params"] = params
            if body is not None:
                kwargs["json"] = body
            resp = identity.request(path, method, **kwargs)
        except PlatformError:
            raise
        except Exception as exc:
            mapped = _translate(operation, exc)
            if mapped is None:
                raise
            raise mapped from None
        status = int(resp.status_code)
        if status >= 400:
            try:
                payload = resp.json()
            except ValueError:
                payload = None
            raise _http_error(operation, status, payload, resp.headers.get("Retry-After"))
        if status == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise PermanentError(f"openstack {operation}: the answer is not JSON") from exc

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """One Keystone request in a worker thread, within the platform's budget: counted, errors
        mapped to the contract's types."""
        async with self.budget:
            try:
                return await asyncio.to_thread(self._call_sync, operation, method, path, params, body)
            except RetryableError as exc:
                if exc.retry_after:
                    self.budget.pause(exc.retry_after)
                raise

    async def _list(
        self, operation: str, path: str, key: str, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Every item of a list; fails rather than return a truncated list."""
        items: list[dict[str, Any]] = []
        seen: set[str] = set()
        page = await self._call(operation, "GET", path, params)
        while True:
            page = page or {}
            if page.get("truncated"):
                raise PermanentError(
                    f"openstack {operation}: Keystone truncated the list (list_limit): cannot read it whole"
                )
            items.extend(page.get(key) or [])
            nxt = (page.get("links") or {}).get("next")
            if not nxt:
                return items
            if nxt in seen:
                raise PermanentError(f"openstack {operation}: the server repeated a next link")
            seen.add(nxt)
            page = await self._call(operation, "GET", nxt)

    # --- reads ----------------------------------------------------------------------------------

    async def _domain_id(self, name: str) -> str:
        """A configured domain (name, or id) -> its id; memoised."""
        async with self._meta_lock:
            if name not in self._domains:
                rows = await self._list("find_domain", "/domains", "domains", {"name": name})
                if not rows:
                    try:
                        row = (await self._call("find_domain", "GET", f"/domains/{name}"))["domain"]
                    except _NotFoundError:
                        raise PlatformConfigError(
                            f"openstack: domain {name!r} does not exist in Keystone"
                        ) from None
                    rows = [row]
                self._domains[name] = str(rows[0]["id"])
            return self._domains[name]

    async def _role_ids(self) -> dict[str, str]:
        """Role name -> id (global roles); memoised per driver instance."""
        async with self._meta_lock:
            if self._roles is None:
                rows = await self._list("list_roles", "/roles", "roles", {})
                self._roles = {str(r["name"]): str(r["id"]) for r in rows if not r.get("domain_id")}
            return self._roles

    async def _role_id(self, role: str, action: Action) -> str | None:
        roles = await self._role_ids()
        role_id = roles.get(role)
        if role_id is None and action is Action.GRANT:
            raise PermanentError(f"openstack grant: role {role!r} does not exist in Keystone")
        return role_id

    async def _get_group(self, group_id: str) -> _Group | None:
        try:
            resp = await self._call("get_group", "GET", f"/groups/{group_id}")
        except _NotFoundError:
            return None
        return _group(resp["group"])

    async def _group_by_name(self, name: str) -> _Group | None:
        domain_id = await self._domain_id(self.options.group_domain)
        rows = await self._list("find_group", "/groups", "groups", {"name": name, "domain_id": domain_id})
        rows = [r for r in rows if r.get("name") == name]
        return _group(rows[0]) if rows else None

    async def _user_index(self) -> dict[str, list[PlatformUser]]:
        """User name casefolded -> users; one list per user domain, once per driver."""
        async with self._scan_lock:
            if self._users_by_key is None:
                domains = [self.options.user_domain]
                fed = self.options.federated_idp
                if fed.enabled and fed.user_domain not in domains:
                    domains.append(fed.user_domain)
                index: dict[str, list[PlatformUser]] = {}
                for domain in domains:
                    domain_id = await self._domain_id(domain)
                    rows = await self._list("list_users", "/users", "users", {"domain_id": domain_id})
                    for row in rows:
                        user = PlatformUser(id=str(row["id"]), name=str(row.get("name") or ""))
                        if user.name:
                            index.setdefault(user.name.casefold(), []).append(user)
                self._users_by_key = index
            return self._users_by_key

    async def _project_roles(self, tenant: TenantRef) -> dict[str, frozenset[str]]:
        """Group id -> role names of every group assignment on the tenant's project: ONE read of
        ``/role_assignments?scope.project.id=`` (all pages; user assignments and other groups'
        are dropped here, client-side, and so are assignments inherited to the project's
        subprojects (``OS-INHERIT:inherited_to``), which Keystone lists on the project but which
        do not grant the role on it, and which this driver neither makes nor revokes)."""
        assignments = await self._list(
            "list_role_assignments",
            "/role_assignments",
            "role_assignments",
            {"scope.project.id": tenant.local_id, "include_names": "true"},
        )
        roles: dict[str, set[str]] = {}
        for a in assignments:
            group_id = (a.get("group") or {}).get("id")
            role = a.get("role") or {}
            if not group_id or not role:
                continue
            scope = a.get("scope") or {}
            if (scope.get("project") or {}).get("id") != tenant.local_id:
                continue
            if scope.get("OS-INHERIT:inherited_to"):  # applies to the project's children, not to it
                continue
            roles.setdefault(str(group_id), set()).add(str(role.get("name") or role.get("id")))
        return {group_id: frozenset(names) for group_id, names in roles.items()}

    async def _observe_group(
        self, group: _Group, alias: str, project_roles: dict[str, frozenset[str]]
    ) -> ObservedGroup:
        try:
            users = await self._list("list_group_users", f"/groups/{group.id}/users", "users", {})
        except _NotFoundError:
            if self._scan is not None and self._scan.forget(group):
                raise GoneSinceScan(group.id) from None
            raise
        members = {PlatformUser(id=str(u["id"]), name=str(u.get("name") or u["id"])) for u in users}
        return ObservedGroup(
            id=group.id,
            name=group.name,
            alias=alias,
            members=frozenset(members),
            roles=project_roles.get(group.id, frozenset()),
        )

    # --- apply ----------------------------------------------------------------------------------

    async def _create_group(self, tenant: TenantRef, name: str) -> str:
        async def existing() -> str | None:
            group = await self._group_by_name(name)
            if group is None:
                return None
            if is_marked_for(group.description, tenant):
                return group.id
            raise ForeignObjectError(
                f"openstack create_group: a group named {name!r} already exists and is not ours "
                f"(id {group.id}, for {tenant.key})"
            )

        found = await existing()
        if found is not None:
            return found
        domain_id = await self._domain_id(self.options.group_domain)
        body = {"group": {"name": name, "domain_id": domain_id, "description": owner_marker(tenant)}}
        try:
            resp = await self._call("create_group", "POST", "/groups", body=body)
        except _ConflictError as exc:
            found = await existing()
            if found is not None:
                return found
            raise RetryableError(
                f"openstack create_group: conflict for {name!r}, but no such group yet"
            ) from exc
        return str(resp["group"]["id"])

    async def _member(self, action: Action, group_id: str, user: PlatformUser) -> None:
        path = f"/groups/{group_id}/users/{user.id}"
        if action is Action.ADD_MEMBER:
            await self._call("add_group_user", "PUT", path)
            return
        try:
            await self._call("remove_group_user", "DELETE", path)
        except _NotFoundError:
            return

    async def _assignment(self, action: Action, tenant: TenantRef, role: str, group_id: str) -> None:
        role_id = await self._role_id(role, action)
        if role_id is None:  # a revoke of a role Keystone no longer has: nothing is assigned
            return
        path = f"/projects/{tenant.local_id}/groups/{group_id}/roles/{role_id}"
        if action is Action.GRANT:
            try:
                await self._call("assign_group_role", "PUT", path)
            except _NotFoundError as exc:
                raise PermanentError(
                    f"openstack grant {role}: project {tenant.local_id} or group {group_id} not found"
                ) from exc
            return
        try:
            await self._call("unassign_group_role", "DELETE", path)
        except _NotFoundError:
            return

    async def _delete_group(self, tenant: TenantRef, name: str, group_id: str | None) -> None:
        if group_id is None:
            group = await self._group_by_name(name)
            if group is not None and not is_marked_for(group.description, tenant):
                raise ForeignObjectError(f"openstack delete_group: group {name!r} ({group.id}) is not ours")
        else:
            group = await self._get_group(group_id)
            if group is not None and not is_marked(group.description):
                raise ForeignObjectError(f"openstack delete_group: group {name!r} ({group.id}) is not ours")
        if group is None:
            return
        try:
            await self._call("delete_group", "DELETE", f"/groups/{group.id}")
        except _NotFoundError:
            return

    async def _ensure_user(self, euid: str) -> str:
        """The federated user for ``euid``: found by (idp, unique id), else by name in the federated
        user domain, else created with the ``federated`` attribute."""
        fed = self.options.federated_idp
        if not fed.enabled or not fed.idp_id:
            raise PermanentError(
                "openstack ensure_user: federatedIdp is not enabled on this platform, users are not created"
            )
        rows = await self._list(
            "find_federated_user", "/users", "users", {"idp_id": fed.idp_id, "unique_id": euid}
        )
        if rows:
            return str(rows[0]["id"])
        domain_id = await self._domain_id(fed.user_domain)
        rows = await self._list("find_user", "/users", "users", {"name": euid, "domain_id": domain_id})
        if rows:
            return str(rows[0]["id"])
        body = {
            "user": {
                "name": euid,
                "domain_id": domain_id,
                "enabled": True,
                "federated": [
                    {"idp_id": fed.idp_id, "protocols": [{"protocol_id": fed.protocol_id, "unique_id": euid}]}
                ],
            }
        }
        try:
            resp = await self._call("create_user", "POST", "/users", body=body)
        except _ConflictError as exc:
            rows = await self._list("find_user", "/users", "users", {"name": euid, "domain_id": domain_id})
            if rows:
                return str(rows[0]["id"])
            raise RetryableError(
                f"openstack create_user: conflict for {euid!r}, but no such user yet"
            ) from exc
        user_id = str(resp["user"]["id"])
        if self._users_by_key is not None:
            self._users_by_key.setdefault(euid.casefold(), []).append(PlatformUser(user_id, euid))
        return user_id

    # --- the contract ---------------------------------------------------------------------------

    async def lookup_users(self, euids: Sequence[str]) -> dict[str, tuple[PlatformUser, ...]]:
        if not euids:
            return {}
        index = await self._user_index()
        return {euid: tuple(sorted(index.get(euid.casefold(), ()))) for euid in euids}

    async def observe(
        self, tenant: TenantRef, owned: Sequence[OwnedGroup], desired_names: Mapping[str, str]
    ) -> ObservedTenant:
        # the project's role assignments: read once per observe, at the first group that is ours
        # (none when no group is: a tenant whose groups all vanished reads no assignments), and
        # kept when the observation starts again after a scanned group turned out deleted
        project_roles: list[dict[str, frozenset[str]]] = []
        once = asyncio.Lock()

        async def observe_one(group: _Group, alias: str) -> ObservedGroup:
            async with once:
                if not project_roles:
                    project_roles.append(await self._project_roles(tenant))
            return await self._observe_group(group, alias, project_roles[0])

        return await observe_marked_groups(
            tenant, owned, desired_names, self._observed_by_id, self._observed_by_name, observe_one
        )

    async def prepare(self, groups: int) -> None:
        """One ``list_groups`` scan of ``groupDomain`` for a run that names at least
        ``groupScanThreshold`` groups. The previous run's scan is dropped first; a scan that fails
        (an error, or a list cut by ``list_limit``) leaves none, and observe reads group by group."""
        self._scan = None
        threshold = self.options.group_scan_threshold
        if not threshold or groups < threshold:
            return
        domain_id = await self._domain_id(self.options.group_domain)
        rows = await self._list("list_groups", "/groups", "groups", {"domain_id": domain_id})
        found = [_group(row) for row in rows]
        self._scan = GroupScan(found, lambda g: g.name)

    async def _observed_by_id(self, group_id: str) -> _Group | None:
        """A recorded group: from this run's scan when it has the id (no call), else ``get_group``
        (a group deleted by hand, or one outside ``groupDomain``)."""
        if self._scan is not None and group_id in self._scan.by_id:
            return self._scan.by_id[group_id]
        return await self._get_group(group_id)

    async def _observed_by_name(self, name: str) -> _Group | None:
        """A group by name: from this run's scan (absent there: free; ``create_group`` asks Keystone
        again before it creates), else ``find_group``."""
        if self._scan is not None:
            return self._scan.by_key.get(name)
        return await self._group_by_name(name)

    async def apply(self, tenant: TenantRef, change: Change, group_id: str | None) -> str | None:
        action = change.action
        if action is Action.CREATE_GROUP:
            return await self._create_group(tenant, change.group)
        if action is Action.ENSURE_USER:
            if not change.euid:
                raise PermanentError("openstack ensure_user: the change names no euid")
            return await self._ensure_user(change.euid)
        if action is Action.DELETE_GROUP:
            await self._delete_group(tenant, change.group, group_id)
            return None
        if group_id is None:
            raise PermanentError(f"openstack {action}: no platform id for group {change.group!r}")
        if action in (Action.ADD_MEMBER, Action.REMOVE_MEMBER):
            if change.user is None:
                raise PermanentError(f"openstack {action}: change for {change.group!r} names no user")
            await self._member(action, group_id, change.user)
            return None
        if action in (Action.GRANT, Action.REVOKE):
            if not change.role:
                raise PermanentError(f"openstack {action}: change for {change.group!r} names no role")
            await self._assignment(action, tenant, change.role, group_id)
            return None
        raise PermanentError(f"openstack: unknown action {action!r}")

    async def close(self) -> None:
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
