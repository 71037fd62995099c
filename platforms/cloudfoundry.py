"""Cloud Foundry (Cloud Controller v3) driver.

A tenant is a CF **space** (``localId`` = the space guid); its org is read from the space
(``relationships.organization``, memoised). Cloud Foundry has no groups and its roles carry no
marker, so the contract's group for (tenant, alias) is *virtual*: ``create_group`` only checks
that the space exists and returns the synthetic id ``"<space guid>/<group name>"``; no CF object
is created or deleted for it. The group's "roles" are CF space role types (``space_developer``,
``space_manager``, ``space_auditor``, ``space_supporter``); a member of the group holds each of
them in the space, plus ``organization_user`` in the space's org (CF refuses space roles
without it). Users are matched by ``username`` within one configured ``origin`` (``uaa`` or an
identity provider's origin), case-insensitively; they are never created.

Ownership comes from the state store, not from CF: ``OwnedGroup.members`` holds the user guids
this replicator added to the group and has not removed since, ``OwnedGroup.roles`` the role types
it granted. ``observe`` reports as members only recorded members that still hold *every* role
type of the group (one who lost a role is missing, so the plan adds them again and ``add_member``
recreates the role), unless the run's lookups (``remember_users``) matched nobody with that id:
then the member is bound nowhere in this run and is reported, so that the plan removes the roles
it still holds. Users holding roles the store does not record as ours are never reported,
so they are never touched: unmanaged roles are kept. A role that existed before the replicator
granted the same role type to the same user (422 "already has" on create) is adopted: when the
binding goes, the role goes. Known limit: a recorded member who lost a role by hand and is no
longer bound to the group, but still bound elsewhere on the platform, keeps the group's other
roles until the group's roles are revoked (the plan has no "partly held" state).

Because CF roles are per user, not per group, the driver keeps per tenant an in-memory view
from the last ``observe`` (the space's roles, each group's members and role types) and updates
it as it applies changes in the plan's order. A role is deleted by ``revoke``/``remove_member``
only when no *other* group of the same tenant still grants that role type to that user (two
aliases may both map ``space_developer``; during a rename the new group grants before the old
one is revoked, so its members keep their roles). ``organization_user`` is never removed: the
user may hold roles in other spaces of the org, which this driver does not see.

HTTP goes through httpx (async) with the UAA client-credentials flow: the token is cached until
shortly before ``expires_in`` and fetched again once on a 401. Every request is made inside
``async with self.budget:`` and counted in ``CloudFoundryDriver.api_calls`` under an operation
name (one count per request, including the token request). httpx is imported lazily, so
importing this module is cheap.

API calls per operation (names as counted; R roles in the space, P = ``pageSize``):

``lookup_users``
    ``list_users`` 1 per batch of up to ``lookupBatchSize`` usernames (each euid sent as given and
    lower-cased), + 1 per further page; above ``scanAbove`` euids one paged scan of all users of
    the origin instead (also when a euid holds a comma, which the filter cannot carry).
    Memoised per driver instance.
``observe``
    ``list_roles`` x ceil(R/P) (``space_guids``, ``types``, ``include=user``), once per tenant,
    only when the store records groups for it. A no-op observe: 1 call per tenant.
``apply``
    create_group:  ``get_space`` 1 per space per driver (memoised), nothing else
    add_member:    ``get_space`` (memoised) + ``create_role`` 1 for ``organization_user`` (once
                   per org and user per driver) + ``create_role`` 1 per role type of the group the
                   user does not hold yet (422 "already has" = success)
    grant:         ``create_role`` 1 per member who does not hold the role type yet
    revoke:        per member whose role no other group grants: ``delete_role`` 1 + ``get_job`` 1
                   per poll (+ ``find_role`` 1 when the role's guid is unknown, after a 422)
    remove_member: the same, per role type of the group
    delete_group:  no call
    ensure_user:   not supported (PermanentError, no call)
``uaa_token``
    1 per token lifetime (+ ``get_root`` 1 per driver when ``uaaUrl`` is not configured).

Role deletion: CF answers ``DELETE /v3/roles/{guid}`` with 202 and a job (``Location``). The
driver polls the job until ``COMPLETE`` (``jobTimeout`` seconds at most, then RetryableError: the
engine retries the change, a second DELETE of a deleted role is a 404 = success); a ``FAILED``
job is a PermanentError. Treating 202 as done would let the store forget a role CF failed to
delete, after which nobody would ever remove it.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pydantic

from platforms.contract import (
    OPTIONS_CONFIG,
    Action,
    Capabilities,
    Change,
    Driver,
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
from platforms.secrets import SecretRef

if TYPE_CHECKING:
    import httpx

SPACE_ROLE_TYPES = ("space_developer", "space_manager", "space_auditor", "space_supporter")
"""The role types a group may grant (``platformRoles`` of a Cloud Foundry landing zone)."""
ORG_ROLE = "organization_user"
"""Given in the space's org with the first space role (CF requires it); never removed."""
TOKEN_MARGIN = 60.0
"""Seconds before ``expires_in`` at which a cached token is fetched again (at most half its life)."""


class CloudFoundryOptions(pydantic.BaseModel):
    """The ``cloudfoundry:`` block of a platform in the config file."""

    model_config = OPTIONS_CONFIG

    api_url: str = pydantic.Field(min_length=1)
    """The Cloud Controller's URL, e.g. ``https://api.sys.example.com`` (any endpoint: a test
    server, a sovereign installation)."""
    uaa_url: str | None = None
    """UAA's URL for the token request (null: read from ``GET {apiUrl}/`` ``links.uaa``)."""
    client_id: str = pydantic.Field(min_length=1)
    """The UAA client the replicator acts as (client credentials grant; it needs
    ``cloud_controller.admin`` or the org manager role in the orgs it manages)."""
    client_secret: SecretRef
    """The client's secret: ``{env: NAME}`` or ``{file: PATH}``."""
    origin: str = pydantic.Field(default="uaa", min_length=1)
    """The user store users are looked up in: ``uaa`` or an identity provider's origin."""
    org_guid: str | None = None
    """When set, a space (tenant) of another org is refused (a check, not needed otherwise)."""
    verify_tls: bool = True
    """Verify the servers' TLS certificates."""
    ca_file: str | None = None
    """A CA bundle to verify them with (null: the system's)."""
    timeout: float = pydantic.Field(default=30.0, gt=0)
    """Seconds per request before it is abandoned (retryable)."""
    page_size: int = pydantic.Field(default=5000, ge=1, le=5000)
    """``per_page`` of list requests (CF allows 1..5000)."""
    lookup_batch_size: int = pydantic.Field(default=50, ge=1, le=500)
    """Usernames per ``GET /v3/users?usernames=`` request (keeps URLs short)."""
    scan_above: int = pydantic.Field(default=1000, ge=1)
    """Above this many euids in one lookup, scan every user of the origin instead of filtering."""
    job_timeout: float = pydantic.Field(default=60.0, gt=0)
    """Seconds to wait for a role deletion job before the change is retried."""
    job_poll_interval: float = pydantic.Field(default=0.5, gt=0)
    """Seconds between two polls of a role deletion job (doubling, at most 5)."""


class _NotFoundError(PermanentError):
    """HTTP 404: callers that expect it catch it."""


class _UnprocessableError(PermanentError):
    """HTTP 422 with CF's detail (a duplicate role, a missing org role, ...)."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            return str(first.get("detail") or first.get("title") or "")
        if "error_description" in body:  # UAA
            return str(body.get("error_description") or "")
    return ""


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            return None
    reset = headers.get("x-ratelimit-reset")  # CF's rate limiter: epoch seconds of the reset
    if reset:
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            return None
    return None


def _is_duplicate(exc: _UnprocessableError, role: str) -> bool:
    """CF's answer to a role the user holds already: "User 'x' already has 'T' role in space 'y'."
    (cloud_controller_ng ``RoleCreate``, the same for organizations)."""
    return f"already has '{role}' role in " in exc.detail


def _space_role(role: str, operation: str) -> str:
    if role not in SPACE_ROLE_TYPES:
        raise PermanentError(
            f"cloudfoundry {operation}: {role!r} is not a space role type ({', '.join(SPACE_ROLE_TYPES)})"
        )
    return role


@dataclass
class _Group:
    members: set[str] = field(default_factory=set)
    """Members as observed (recorded and holding every role type) plus those added since."""
    roles: set[str] = field(default_factory=set)
    stale: set[str] = field(default_factory=set)
    """Recorded members that lost a role type (not reported): a revoke cleans their roles too,
    but they never keep a role for someone else and get no new role from a grant."""


@dataclass
class _View:
    """One tenant as this driver last saw it and has changed it since."""

    space: str
    roles: dict[tuple[str, str], str | None] = field(default_factory=dict)
    """(user guid, role type) -> role guid (None: the role exists, its guid is not known)."""
    groups: dict[str, _Group] = field(default_factory=dict)

    def granted_elsewhere(self, group: str, user: str, role: str) -> bool:
        """Another group of this tenant still gives ``role`` to ``user``."""
        return any(
            name != group and user in other.members and role in other.roles
            for name, other in self.groups.items()
        )


class CloudFoundryDriver(Driver):
    """Cloud Foundry: space roles per user, grouped virtually by alias; ownership in the store."""

    options_model: ClassVar[type[pydantic.BaseModel]] = CloudFoundryOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        external_grants_default="keep",
        lookup_attribute="username",
        has_groups=False,
        group_name_prefix="",
        max_group_name_length=256,  # never sent to CF
        group_name_pattern=None,
        ensures_users=False,
        role_pattern=re.compile("|".join(SPACE_ROLE_TYPES)),
        role_example="space_developer",
    )

    options: CloudFoundryOptions

    def __init__(self, identifier: str, options: CloudFoundryOptions | Mapping[str, Any]) -> None:
        if not isinstance(options, CloudFoundryOptions):
            try:
                options = CloudFoundryOptions.model_validate(options)
            except pydantic.ValidationError as exc:
                raise PlatformConfigError(f"{identifier}: invalid cloudfoundry block: {exc}") from exc
        super().__init__(identifier, options)
        self.api_calls: Counter[str] = Counter()
        """Cloud Controller and UAA requests made by this driver, by operation name."""
        self._http: httpx.AsyncClient | None = None
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()
        self._meta_lock = asyncio.Lock()
        self._uaa_url: str | None = options.uaa_url
        self._orgs: dict[str, str] = {}
        """space guid -> org guid (memoised ``get_space``)."""
        self._org_users: set[tuple[str, str]] = set()
        """(org guid, user guid) known to hold ``organization_user``."""
        self._users: dict[str, tuple[PlatformUser, ...]] = {}
        """euid casefolded -> users (memoised lookups)."""
        self._names: dict[str, str] = {}
        """user guid -> username, from lookups and ``include=user``."""
        self._views: dict[str, _View] = {}
        self._bound: set[str] | None = None
        """Ids of every user the run's lookups matched (``remember_users``), None when not told."""

    # --- plumbing -------------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            opts = self.options
            verify: bool | ssl.SSLContext = opts.verify_tls
            if opts.verify_tls and opts.ca_file:
                verify = ssl.create_default_context(cafile=opts.ca_file)
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(opts.timeout), verify=verify, headers={"Accept": "application/json"}
            )
        return self._http

    def _url(self, path: str) -> str:
        """``apiUrl`` + path. A link CF gave (``pagination.next``, a job's ``Location``) is taken
        by its path and query only, so the token never goes to a host other than ``apiUrl``
        (and a Cloud Controller behind a proxy that names its external host still works)."""
        if path.startswith(("http://", "https://")):
            base, link = urllib.parse.urlsplit(self.options.api_url), urllib.parse.urlsplit(path)
            return urllib.parse.urlunsplit((base.scheme, base.netloc, link.path, link.query, ""))
        return self.options.api_url.rstrip("/") + path

    async def _send(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        token: str | None = None,
    ) -> httpx.Response:
        """One request inside the budget, counted; transport errors and throttling mapped."""
        import httpx

        headers = {"Authorization": f"bearer {token}"} if token else {}
        async with self.budget:
            self.api_calls[operation] += 1
            try:
                resp = await self._client().request(
                    method, url, params=params, json=json, data=data, auth=auth, headers=headers
                )
            except httpx.TimeoutException as exc:
                raise RetryableError(f"cloudfoundry {operation}: timed out ({type(exc).__name__})") from None
            except httpx.ConnectError as exc:
                if "[SSL" in str(exc):  # certificate refused, or TLS spoken to a plain-HTTP port
                    raise PlatformConfigError(f"cloudfoundry {operation}: TLS: {exc}") from None
                raise RetryableError(f"cloudfoundry {operation}: cannot reach the server: {exc}") from None
            except httpx.TransportError as exc:
                raise RetryableError(f"cloudfoundry {operation}: cannot reach the server: {exc}") from None
            if resp.status_code == 429 or resp.status_code >= 500:
                wait = _retry_after(resp.headers)
                if wait:
                    self.budget.pause(wait)
                detail = _detail(self._json(resp))
                raise RetryableError(
                    f"cloudfoundry {operation}: HTTP {resp.status_code}" + (f": {detail}" if detail else ""),
                    retry_after=wait,
                )
            return resp

    @staticmethod
    def _json(resp: httpx.Response) -> Any:
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return None

    async def _uaa(self) -> str:
        """UAA's URL: configured, or read once from the Cloud Controller's root (called with the
        token lock held, so once per driver)."""
        if self._uaa_url is None:
            resp = await self._send("get_root", "GET", self._url("/"))
            body = self._json(resp) if resp.status_code == 200 else None
            links = body.get("links") if isinstance(body, dict) else None
            link = None
            if isinstance(links, dict):
                link = (links.get("uaa") or links.get("login") or {}).get("href")
            if not link:
                raise PlatformConfigError(
                    f"cloudfoundry: {self.options.api_url} names no UAA (links.uaa): set uaaUrl"
                )
            self._uaa_url = str(link)
        return self._uaa_url

    async def _access_token(self, stale: str | None = None) -> str:
        """The cached token, or a new one when it expires soon or ``stale`` was refused."""
        async with self._token_lock:
            if self._token is not None and self._token != stale and time.monotonic() < self._token_expires:
                return self._token
            try:
                secret = self.options.client_secret.resolve()
            except ValueError as exc:  # names where the secret is, never its value
                raise PlatformConfigError(f"{self.identifier}: clientSecret: {exc}") from None
            uaa = await self._uaa()
            resp = await self._send(
                "uaa_token",
                "POST",
                uaa.rstrip("/") + "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(self.options.client_id, secret),
            )
            body = self._json(resp)
            if resp.status_code in (400, 401, 403):
                raise PlatformConfigError(
                    f"cloudfoundry: UAA refused the client credentials of {self.options.client_id!r} "
                    f"(HTTP {resp.status_code}{': ' + _detail(body) if _detail(body) else ''})"
                )
            if resp.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
                raise PermanentError(f"cloudfoundry uaa_token: unexpected answer (HTTP {resp.status_code})")
            lifetime = float(body.get("expires_in") or 0)
            self._token = str(body["access_token"])
            self._token_expires = time.monotonic() + lifetime - min(TOKEN_MARGIN, lifetime / 2)
            return self._token

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> httpx.Response:
        """One Cloud Controller request with a token (fetched again once on a 401); 4xx mapped,
        except that callers see 404 and 422 as their own types."""
        token = await self._access_token()
        resp = await self._send(operation, method, self._url(path), params=params, json=body, token=token)
        if resp.status_code == 401:
            token = await self._access_token(stale=token)
            resp = await self._send(operation, method, self._url(path), params=params, json=body, token=token)
        status = resp.status_code
        if status < 400:
            return resp
        detail = _detail(self._json(resp))
        message = f"cloudfoundry {operation}: HTTP {status}" + (f": {detail}" if detail else "")
        if status == 401:
            raise PlatformConfigError(message + " (the token was refused twice)")
        if status == 404:
            raise _NotFoundError(message)
        if status == 422:
            raise _UnprocessableError(message, detail)
        raise PermanentError(message)

    async def _list(
        self, operation: str, path: str, params: Mapping[str, str]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every resource of a list (``pagination.next`` followed to the end) and the included
        users; fails rather than return part of it."""
        resources: list[dict[str, Any]] = []
        users: list[dict[str, Any]] = []
        seen: set[str] = set()
        url: str = path
        query: Mapping[str, str] | None = {**params, "per_page": str(self.options.page_size)}
        while True:
            page = self._json(await self._call(operation, "GET", url, query))
            if not isinstance(page, dict) or not isinstance(page.get("resources"), list):
                raise PermanentError(f"cloudfoundry {operation}: the answer is not a CF list")
            resources.extend(page["resources"])
            included = page.get("included")
            if isinstance(included, dict):
                users.extend(included.get("users") or [])
            nxt = ((page.get("pagination") or {}).get("next") or {}).get("href")
            if not nxt:
                return resources, users
            if nxt in seen:
                raise PermanentError(f"cloudfoundry {operation}: the server repeated a next link")
            seen.add(nxt)
            url, query = str(nxt), None

    # --- reads ----------------------------------------------------------------------------------

    async def _org_of(self, space: str) -> str:
        """The org guid of a space (one ``get_space`` per space per driver)."""
        async with self._meta_lock:
            if space not in self._orgs:
                try:
                    resp = await self._call("get_space", "GET", f"/v3/spaces/{space}")
                except _NotFoundError:
                    raise PlatformConfigError(
                        f"cloudfoundry: space {space} does not exist or the client cannot see it"
                    ) from None
                body = self._json(resp) or {}
                org = (((body.get("relationships") or {}).get("organization") or {}).get("data") or {}).get(
                    "guid"
                )
                if not org:
                    raise PermanentError(f"cloudfoundry get_space: space {space} names no organization")
                if self.options.org_guid and org != self.options.org_guid:
                    raise PlatformConfigError(
                        f"cloudfoundry: space {space} belongs to org {org}, not to the configured "
                        f"orgGuid {self.options.org_guid}"
                    )
                self._orgs[space] = str(org)
            return self._orgs[space]

    def _user(self, guid: str) -> PlatformUser:
        return PlatformUser(id=guid, name=self._names.get(guid, guid))

    async def _space_roles(self, space: str) -> dict[tuple[str, str], str | None]:
        rows, users = await self._list(
            "list_roles",
            "/v3/roles",
            {"space_guids": space, "types": ",".join(SPACE_ROLE_TYPES), "include": "user"},
        )
        for u in users:
            if u.get("guid") and u.get("username"):
                self._names.setdefault(str(u["guid"]), str(u["username"]))
        roles: dict[tuple[str, str], str | None] = {}
        for row in rows:
            rel = row.get("relationships") or {}
            user = ((rel.get("user") or {}).get("data") or {}).get("guid")
            in_space = ((rel.get("space") or {}).get("data") or {}).get("guid")
            if user and in_space == space and row.get("type") in SPACE_ROLE_TYPES:
                roles[(str(user), str(row["type"]))] = str(row["guid"])
        return roles

    async def _find_users(self, values: Sequence[str]) -> list[dict[str, Any]]:
        rows, _ = await self._list(
            "list_users", "/v3/users", {"usernames": ",".join(values), "origins": self.options.origin}
        )
        return rows

    def _index(self, rows: Iterable[dict[str, Any]]) -> dict[str, set[PlatformUser]]:
        index: dict[str, set[PlatformUser]] = {}
        for row in rows:
            name, guid = row.get("username"), row.get("guid")
            if not name or not guid or row.get("origin") != self.options.origin:
                continue
            user = PlatformUser(id=str(guid), name=str(name))
            self._names[user.id] = user.name
            index.setdefault(user.name.casefold(), set()).add(user)
        return index

    # --- apply ----------------------------------------------------------------------------------

    async def _create_role(self, role: str, user: str, scope: str, guid: str) -> str | None:
        """Create a role (``scope`` = ``space`` or ``organization``); the role's guid, or None
        when CF says the user already has it."""
        body = {
            "type": role,
            "relationships": {"user": {"data": {"guid": user}}, scope: {"data": {"guid": guid}}},
        }
        try:
            resp = await self._call("create_role", "POST", "/v3/roles", body=body)
        except _UnprocessableError as exc:
            if _is_duplicate(exc, role):
                return None
            raise
        created = self._json(resp) or {}
        return str(created["guid"]) if created.get("guid") else None

    async def _ensure_space_role(self, view: _View, user: str, role: str) -> None:
        key = (user, role)
        if key in view.roles:
            return
        view.roles[key] = await self._create_role(role, user, "space", view.space)

    async def _ensure_org_user(self, space: str, user: str) -> None:
        org = await self._org_of(space)
        if (org, user) in self._org_users:
            return
        await self._create_role(ORG_ROLE, user, "organization", org)
        self._org_users.add((org, user))

    async def _delete_space_role(self, view: _View, user: str, role: str) -> None:
        key = (user, role)
        if key not in view.roles:
            return  # not there when observed, and not created since
        guid = view.roles[key]
        if guid is None:  # adopted after a 422: ask CF for its guid
            rows, _ = await self._list(
                "find_role", "/v3/roles", {"types": role, "space_guids": view.space, "user_guids": user}
            )
            guid = str(rows[0]["guid"]) if rows else None
        if guid is not None:
            try:
                resp = await self._call("delete_role", "DELETE", f"/v3/roles/{guid}")
            except _NotFoundError:
                resp = None
            if resp is not None and resp.status_code == 202:
                await self._wait_job(resp.headers.get("location"))
        view.roles.pop(key, None)

    async def _wait_job(self, location: str | None) -> None:
        """Poll a job until COMPLETE; FAILED is a PermanentError, too slow is retryable."""
        if not location:
            return  # no job to follow: CF deleted synchronously
        deadline = time.monotonic() + self.options.job_timeout
        interval = self.options.job_poll_interval
        while True:
            try:
                job = self._json(await self._call("get_job", "GET", location)) or {}
            except _NotFoundError:
                return  # finished jobs are eventually pruned
            state = str(job.get("state") or "")
            if state == "COMPLETE":
                return
            if state == "FAILED":
                raise PermanentError(
                    f"cloudfoundry delete_role: job {job.get('guid')} failed: {_detail(job) or 'no detail'}"
                )
            if time.monotonic() + interval > deadline:
                raise RetryableError(
                    f"cloudfoundry delete_role: job still {state or 'running'} after "
                    f"{self.options.job_timeout:g} s"
                )
            await asyncio.sleep(interval)
            interval = min(interval * 2, 5.0)

    def _view(self, tenant: TenantRef, operation: str) -> _View:
        view = self._views.get(tenant.key)
        if view is None or view.space != tenant.local_id:
            # Without the observation the "another group still grants it" rule cannot be kept.
            raise PermanentError(f"cloudfoundry {operation}: tenant {tenant.key} was not observed first")
        return view

    async def _add_member(self, view: _View, name: str, user: PlatformUser) -> None:
        group = view.groups.setdefault(name, _Group())
        await self._ensure_org_user(view.space, user.id)
        for role in sorted(group.roles):
            await self._ensure_space_role(view, user.id, role)
        group.members.add(user.id)
        group.stale.discard(user.id)
        self._names.setdefault(user.id, user.name)

    async def _remove_member(self, view: _View, name: str, user: PlatformUser) -> None:
        group = view.groups.setdefault(name, _Group())
        group.members.discard(user.id)  # so that this group does not count as granting "elsewhere"
        for role in sorted(group.roles):
            if not view.granted_elsewhere(name, user.id, role):
                await self._delete_space_role(view, user.id, role)
        group.members.discard(user.id)
        group.stale.discard(user.id)

    async def _grant(self, view: _View, name: str, role: str) -> None:
        group = view.groups.setdefault(name, _Group())
        for member in sorted(group.members):
            await self._ensure_space_role(view, member, role)
        group.roles.add(role)

    async def _revoke(self, view: _View, name: str, role: str) -> None:
        group = view.groups.setdefault(name, _Group())
        for member in sorted(group.members | group.stale):
            if not view.granted_elsewhere(name, member, role):
                await self._delete_space_role(view, member, role)
        group.roles.discard(role)

    # --- the contract ---------------------------------------------------------------------------

    async def lookup_users(self, euids: Sequence[str]) -> dict[str, tuple[PlatformUser, ...]]:
        """Users of ``origin`` whose username equals each euid case-insensitively. The v3 API
        documents ``usernames`` as an exact filter without saying whether it ignores case (the
        Cloud Controller passes it on to UAA as a SCIM ``username eq "..."`` filter), so each
        euid is sent as given and lower-cased, and answers are compared casefolded here."""
        wanted = [e for e in dict.fromkeys(euids) if e.casefold() not in self._users]
        if wanted:
            if len(wanted) > self.options.scan_above or any("," in e for e in wanted):
                # a comma cannot be sent in the comma-delimited filter: read every user instead
                rows, _ = await self._list("list_users", "/v3/users", {})
            else:
                values = list(dict.fromkeys(v for e in wanted for v in (e, e.lower())))
                size = self.options.lookup_batch_size
                rows = []
                for start in range(0, len(values), size):
                    rows += await self._find_users(values[start : start + size])
            index = self._index(rows)
            for euid in wanted:
                self._users[euid.casefold()] = tuple(sorted(index.get(euid.casefold(), ())))
        return {euid: self._users[euid.casefold()] for euid in euids}

    def remember_users(self, users: Iterable[PlatformUser]) -> None:
        """Every user the run's lookups matched (the engine calls this before any ``observe``):
        names for reported members, and who is bound at all (see ``observe``)."""
        bound = self._bound if self._bound is not None else set()
        for user in users:
            self._names.setdefault(user.id, user.name)
            bound.add(user.id)
        self._bound = bound

    async def observe(
        self, tenant: TenantRef, owned: Sequence[OwnedGroup], desired_names: Mapping[str, str]
    ) -> ObservedTenant:
        space = tenant.local_id
        roles = await self._space_roles(space) if owned else {}
        view = _View(space=space, roles=roles)
        groups: list[ObservedGroup] = []
        for record in owned:
            granted = {r for r in record.roles if r in SPACE_ROLE_TYPES}
            members = {
                m
                for m in record.members
                if all((m, r) in roles for r in granted)
                # bound nowhere in this run: reported anyway, so that the plan removes what is left
                or (self._bound is not None and m not in self._bound)
            }
            view.groups[record.name] = _Group(
                members=set(members), roles=set(granted), stale=set(record.members) - members
            )
            groups.append(
                ObservedGroup(
                    id=record.platform_id or f"{space}/{record.name}",
                    name=record.name,
                    alias=record.alias,
                    members=frozenset(self._user(m) for m in members),
                    roles=frozenset(record.roles),
                )
            )
        self._views[tenant.key] = view
        # Desired names without a record are free: CF has no group objects to collide with.
        return ObservedTenant(groups=tuple(groups))

    async def apply(self, tenant: TenantRef, change: Change, group_id: str | None) -> str | None:
        action = change.action
        op = action.value
        if action is Action.ENSURE_USER:
            raise PermanentError("cloudfoundry ensure_user: users are not created on Cloud Foundry")
        view = self._view(tenant, op)
        if action is Action.CREATE_GROUP:
            await self._org_of(view.space)  # the space exists (and is in orgGuid, when set)
            view.groups.setdefault(change.group, _Group())
            return f"{view.space}/{change.group}"
        if action is Action.DELETE_GROUP:
            # Its roles were revoked before (the plan orders revokes first); nothing exists in CF.
            view.groups.pop(change.group, None)
            return None
        if action in (Action.ADD_MEMBER, Action.REMOVE_MEMBER):
            if change.user is None:
                raise PermanentError(f"cloudfoundry {op}: change for {change.group!r} names no user")
            if action is Action.ADD_MEMBER:
                await self._add_member(view, change.group, change.user)
            else:
                await self._remove_member(view, change.group, change.user)
            return None
        if action in (Action.GRANT, Action.REVOKE):
            if not change.role:
                raise PermanentError(f"cloudfoundry {op}: change for {change.group!r} names no role")
            role = _space_role(change.role, op)
            if action is Action.GRANT:
                await self._grant(view, change.group, role)
            else:
                await self._revoke(view, change.group, role)
            return None
        raise PermanentError(f"cloudfoundry: unknown action {action!r}")

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()


__all__ = ["SPACE_ROLE_TYPES", "CloudFoundryDriver", "CloudFoundryOptions", "PlatformError"]
