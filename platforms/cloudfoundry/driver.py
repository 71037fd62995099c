"""Cloud Foundry (Cloud Controller v3) driver.

A tenant is a CF **space** (``localId`` = the space guid); its org is read from the space
(``relationships.organization``, memoised). Cloud Foundry has no groups and its roles carry no
marker, so the contract's group for (tenant, alias) is *virtual*: ``create_group`` only checks
that the space exists and returns the synthetic id ``"<space guid>/<group name>"``; no CF object
is created or deleted for it. The group's "roles" are CF space role types (``space_developer``,
``space_manager``, ``space_auditor``, ``space_supporter``); a member of the group holds each of
them in the space, plus ``organization_user`` in the space's org (CF refuses space roles
without it). Users are matched by ``username`` within one configured ``origin`` (``uaa`` or an
identity provider's origin), case-insensitively. ``GET /v3/users`` lists only users the Cloud
Controller already knows and the client may read (an SSO user who never logged in is not
there); with ``ensureUsers`` (the default) such a user is *ensured*: ``ensure_user`` gives them
``organization_user`` in the space's org by ``username`` + ``origin``, which makes the Cloud
Controller user, and returns its guid, so the space roles and the store's record use the real
guid from the first run on, and the next run's lookup finds the same guid (no marker ids, no
second identity for one user, no duplicate role).

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

HTTP goes through httpx with the UAA client-credentials flow (see :mod:`platforms.cloudfoundry.calls`);
every request is counted in ``CloudFoundryDriver.api_calls`` under an operation name.

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
    ensure_user:   ``get_space`` (memoised) + ``create_role`` 1 (``organization_user`` by username +
                   origin; + ``list_users`` 1 when CF answers "already has"); without
                   ``ensureUsers`` refused (PermanentError, no call)
``uaa_token``
    1 per token lifetime (+ ``get_root`` 1 per driver when ``uaaUrl`` is not configured).

Role deletion: CF answers ``DELETE /v3/roles/{guid}`` with 202 and a job (``Location``). The
driver polls the job through ``PROCESSING`` and ``POLLING`` until ``COMPLETE`` (``jobTimeout``
seconds at most, then PendingError: the engine retries the change, which polls the same job
again instead of deleting twice, and past the run requeues the tenant); a ``FAILED`` job, or a
state CF does not document, is a PermanentError. Treating 202 as done would let the store
forget a role CF failed to delete, after which nobody would ever remove it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from platforms import contract
from platforms.cloudfoundry.calls import CloudFoundryCalls, UnprocessableError
from platforms.cloudfoundry.options import CloudFoundryOptions
from platforms.contract import (
    Action,
    ObservedGroup,
    ObservedTenant,
    PermanentError,
    PlatformUser,
    UnknownUserError,
)
from platforms.kit.errors import NotFoundError

if TYPE_CHECKING:
    from platforms.contract import Change, OwnedGroup, TenantRef

SPACE_ROLE_TYPES = ("space_developer", "space_manager", "space_auditor", "space_supporter")
"""The role types a group may grant (``platformRoles`` of a Cloud Foundry landing zone)."""
ORG_ROLE = "organization_user"
"""Given in the space's org with the first space role (CF requires it); never removed."""


def _is_duplicate(exc: UnprocessableError, role: str) -> bool:
    """CF's answer to a role the user holds already: "User 'x' already has 'T' role in space 'y'."
    (the same for a role in an organization)."""
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


class CloudFoundryDriver(CloudFoundryCalls):
    """Cloud Foundry: space roles per user, grouped virtually by alias; ownership in the store."""

    capabilities = contract.Capabilities(
        external_grants_default="keep",
        lookup_attribute="username",
        has_groups=False,  # a group is virtual: its name is never sent to CF
        ensures_users=True,  # with ensureUsers (the default; see capabilities_for)
        role_pattern=re.compile("|".join(SPACE_ROLE_TYPES)),
        role_example="space_developer",
    )

    ensure_user_refusal = "ensureUsers is off: users the Cloud Controller does not list are not added"
    needs_group_id = False

    @classmethod
    def capabilities_for(cls, options: Any) -> contract.Capabilities:
        """Users the lookup does not find are ensured (by username + origin) with ``ensureUsers``."""
        ensure = not isinstance(options, CloudFoundryOptions) or options.ensure_users
        return dataclasses.replace(cls.capabilities, ensures_users=ensure)

    def _setup(self) -> None:
        super()._setup()
        self._meta_lock = asyncio.Lock()
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
        self._jobs: dict[str, str] = {}
        """role guid -> the ``Location`` of its deletion job, while the job outlasted our wait."""

    # --- lookup_users ---------------------------------------------------------------------------

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

    # --- observe --------------------------------------------------------------------------------

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

    # --- apply ----------------------------------------------------------------------------------

    async def apply(self, tenant: TenantRef, change: Change, group_id: str | None) -> str | None:
        """As every driver, except that ``ensure_user`` needs the tenant (its org)."""
        if change.action is Action.ENSURE_USER and self.options.ensure_users and change.euid:
            return await self._ensure_user_in(tenant, change.euid)
        return await super().apply(tenant, change, group_id)

    async def _ensure_user_in(self, tenant: TenantRef, euid: str) -> str:
        """Give ``euid`` of ``origin`` the role ``organization_user`` in the space's org by username
        and origin: the Cloud Controller finds the user in UAA and creates its own user
        (cloud_controller_ng app/controllers/v3/roles_controller.rb ``create_org_role``). Its guid
        comes back in the role, so the space roles that follow go by guid (a space role needs that
        org role). Asked again (a later run whose lookup still missed them) CF answers "already
        has": the user is then looked up once more, and found, since they now hold a role in the org.
        UAA knowing nobody by that name is an UnknownUserError (the user is USER_NOT_FOUND, the
        tenant's other changes go on): only that user's login (or CAPI's
        ``allow_user_creation_by_org_manager``) can make them."""
        org = await self._org_of(tenant.local_id)
        origin = self.options.origin
        ref = {"username": euid, "origin": origin}
        try:
            _, guid = await self._create_role(ORG_ROLE, ref, "organization", org)
        except UnprocessableError as exc:
            if "No user exists with the username" in exc.detail:
                raise UnknownUserError(
                    f"cloudfoundry ensure_user: UAA has no user {euid!r} in origin {origin!r} "
                    f"({exc.detail}): they must log in once, or exist in UAA, before they can be given roles"
                ) from None
            raise
        if guid is None:  # "already has": the user exists, find them
            index = self._index(await self._find_users([euid, euid.lower()]))
            users = sorted(index.get(euid.casefold(), ()))
            if len(users) != 1:
                raise PermanentError(
                    f"cloudfoundry ensure_user: {euid!r} holds {ORG_ROLE} in org {org} but "
                    f"GET /v3/users finds {len(users)} users of that name in origin {origin!r}"
                )
            guid = users[0].id
        self._org_users.add((org, guid))
        self._names.setdefault(guid, euid)
        return guid

    def _check_change(self, tenant: TenantRef, change: Change) -> None:
        self._view(tenant, change.action.value)

    async def _create_group(self, tenant: TenantRef, name: str) -> str:
        view = self._view(tenant, "create_group")
        await self._org_of(view.space)  # the space exists (and is in orgGuid, when set)
        view.groups.setdefault(name, _Group())
        return f"{view.space}/{name}"

    async def _delete_group(self, tenant: TenantRef, name: str, group_id: str | None) -> None:
        # Its roles were revoked before (the plan orders revokes first); nothing exists in CF.
        self._view(tenant, "delete_group").groups.pop(name, None)

    async def _add_member(self, tenant: TenantRef, name: str, group_id: str, user: PlatformUser) -> None:
        view = self._view(tenant, "add_member")
        group = view.groups.setdefault(name, _Group())
        await self._ensure_org_user(view.space, user.id)
        for role in sorted(group.roles):
            await self._ensure_space_role(view, user.id, role)
        group.members.add(user.id)
        group.stale.discard(user.id)
        self._names.setdefault(user.id, user.name)

    async def _remove_member(self, tenant: TenantRef, name: str, group_id: str, user: PlatformUser) -> None:
        view = self._view(tenant, "remove_member")
        group = view.groups.setdefault(name, _Group())
        group.members.discard(user.id)  # so that this group does not count as granting "elsewhere"
        for role in sorted(group.roles):
            if not view.granted_elsewhere(name, user.id, role):
                await self._delete_space_role(view, user.id, role)
        group.members.discard(user.id)
        group.stale.discard(user.id)

    async def _grant(self, tenant: TenantRef, name: str, group_id: str, role: str) -> None:
        view, role = self._view(tenant, "grant"), _space_role(role, "grant")
        group = view.groups.setdefault(name, _Group())
        for member in sorted(group.members):
            await self._ensure_space_role(view, member, role)
        group.roles.add(role)

    async def _revoke(self, tenant: TenantRef, name: str, group_id: str, role: str) -> None:
        view, role = self._view(tenant, "revoke"), _space_role(role, "revoke")
        group = view.groups.setdefault(name, _Group())
        for member in sorted(group.members | group.stale):
            if not view.granted_elsewhere(name, member, role):
                await self._delete_space_role(view, member, role)
        group.roles.discard(role)

    def _view(self, tenant: TenantRef, operation: str) -> _View:
        view = self._views.get(tenant.key)
        if view is None or view.space != tenant.local_id:
            # Without the observation the "another group still grants it" rule cannot be kept.
            raise PermanentError(f"cloudfoundry {operation}: tenant {tenant.key} was not observed first")
        return view

    async def _org_of(self, space: str) -> str:
        """The org guid of a space (one ``get_space`` per space per driver)."""
        async with self._meta_lock:
            if space not in self._orgs:
                try:
                    resp = await self._call("get_space", "GET", f"/v3/spaces/{space}")
                except NotFoundError:
                    raise contract.PlatformConfigError(
                        f"cloudfoundry: space {space} does not exist or the client cannot see it"
                    ) from None
                body = self._json(resp) or {}
                org = (((body.get("relationships") or {}).get("organization") or {}).get("data") or {}).get(
                    "guid"
                )
                if not org:
                    raise PermanentError(f"cloudfoundry get_space: space {space} names no organization")
                if self.options.org_guid and org != self.options.org_guid:
                    raise contract.PlatformConfigError(
                        f"cloudfoundry: space {space} belongs to org {org}, not to the configured "
                        f"orgGuid {self.options.org_guid}"
                    )
                self._orgs[space] = str(org)
            return self._orgs[space]

    async def _create_role(
        self, role: str, user: str | dict[str, str], scope: str, guid: str
    ) -> tuple[str | None, str | None]:
        """Create a role (``scope`` = ``space`` or ``organization``) for a user guid or a
        ``{username, origin}``; the role's guid and its user's guid, (None, None) when CF says the
        user already has it."""
        data = {"guid": user} if isinstance(user, str) else user
        body = {"type": role, "relationships": {"user": {"data": data}, scope: {"data": {"guid": guid}}}}
        try:
            resp = await self._call("create_role", "POST", "/v3/roles", body=body)
        except UnprocessableError as exc:
            if _is_duplicate(exc, role):
                return None, None
            raise
        created = self._json(resp) or {}
        holder = (((created.get("relationships") or {}).get("user") or {}).get("data") or {}).get("guid")
        return (
            str(created["guid"]) if created.get("guid") else None,
            str(holder) if holder else None,
        )

    async def _ensure_space_role(self, view: _View, user: str, role: str) -> None:
        key = (user, role)
        if key in view.roles:
            return
        view.roles[key], _ = await self._create_role(role, user, "space", view.space)

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
            location = self._jobs.get(guid)
            if location is None:  # not asked before (or the job we followed ended)
                try:
                    resp = await self._call("delete_role", "DELETE", f"/v3/roles/{guid}")
                except NotFoundError:
                    resp = None
                if resp is not None and resp.status_code == 202:
                    location = resp.headers.get("location")
            if location:
                self._jobs[guid] = location
                await self._wait_job("delete_role", location)  # PendingError: the job stays remembered
                self._jobs.pop(guid, None)
        view.roles.pop(key, None)
