"""OpenStack (Keystone v3) driver.

A tenant is a Keystone project (``localId`` = the project id). Groups live in one configured
Keystone domain (``groupDomain``) and are named by the platform's group name pattern (no prefix);
a role is a Keystone role *name* assigned to the group on the project. Users are matched by
``User.name`` in ``userDomain`` (case-insensitive). With ``federatedIdp.enabled`` a bound user
missing in Keystone is created in the federated user domain with the ``federated`` attribute
(identity provider, protocol, unique id = the transformed euid), so that the user's first login
through the IdP maps to it. openstacksdk is imported lazily, inside methods, so importing this
package is cheap.

Every request is counted in ``OpenstackDriver.api_calls`` under an operation name (see
:mod:`platforms.openstack.calls`).

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from platforms import contract
from platforms.contract import ObservedGroup, ObservedTenant, PermanentError, PlatformUser, RetryableError
from platforms.kit.errors import ConflictError, NotFoundError
from platforms.kit.ownership import create_or_adopt, delete_marked_group, owner_marker
from platforms.kit.scan import GoneSinceScan, GroupScan, observe_marked_groups
from platforms.kit.users import UserIndex
from platforms.openstack.calls import OpenstackCalls
from platforms.openstack.options import OpenstackOptions

if TYPE_CHECKING:
    from platforms.contract import OwnedGroup, TenantRef


@dataclass(frozen=True)
class _Group:
    id: str
    name: str
    description: str


def _group(item: Mapping[str, Any]) -> _Group:
    return _Group(str(item["id"]), str(item.get("name") or ""), str(item.get("description") or ""))


class OpenstackDriver(OpenstackCalls):
    """Keystone: groups in a domain, group role assignments on projects, optional federated users."""

    capabilities = contract.Capabilities(
        external_grants_default="keep",
        lookup_attribute="name",
        max_group_name_length=64,  # Keystone's group.name column
        ensures_users=True,  # with federatedIdp.enabled (see capabilities_for)
        role_example="member",
    )

    def _setup(self) -> None:
        super()._setup()
        self._meta_lock = asyncio.Lock()
        self._domains: dict[str, str] = {}
        self._roles: dict[str, str] | None = None
        self._users = UserIndex(self._all_users)
        self._scan: GroupScan[_Group] | None = None

    # --- lookup_users ---------------------------------------------------------------------------

    async def lookup_users(self, euids: Sequence[str]) -> dict[str, tuple[PlatformUser, ...]]:
        return await self._users.lookup(euids)

    async def _all_users(self) -> list[PlatformUser]:
        """Every user of ``userDomain`` (and of the federated user domain when it differs): one
        list per domain, once per driver (by :class:`UserIndex`)."""
        domains = [self.options.user_domain]
        fed = self.options.federated_idp
        if fed.enabled and fed.user_domain not in domains:
            domains.append(fed.user_domain)
        users: list[PlatformUser] = []
        for domain in domains:
            domain_id = await self._domain_id(domain)
            rows = await self._list("list_users", "/users", "users", {"domain_id": domain_id})
            users += [PlatformUser(id=str(row["id"]), name=str(row.get("name") or "")) for row in rows]
        return users

    async def _domain_id(self, name: str) -> str:
        """A configured domain (name, or id) -> its id; memoised."""
        async with self._meta_lock:
            if name not in self._domains:
                rows = await self._list("find_domain", "/domains", "domains", {"name": name})
                if not rows:
                    try:
                        row = (await self._call("find_domain", "GET", f"/domains/{name}"))["domain"]
                    except NotFoundError:
                        raise contract.PlatformConfigError(
                            f"openstack: domain {name!r} does not exist in Keystone"
                        ) from None
                    rows = [row]
                self._domains[name] = str(rows[0]["id"])
            return self._domains[name]

    # --- observe --------------------------------------------------------------------------------

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

    async def _get_group(self, group_id: str) -> _Group | None:
        try:
            resp = await self._call("get_group", "GET", f"/groups/{group_id}")
        except NotFoundError:
            return None
        return _group(resp["group"])

    async def _group_by_name(self, name: str) -> _Group | None:
        domain_id = await self._domain_id(self.options.group_domain)
        rows = await self._list("find_group", "/groups", "groups", {"name": name, "domain_id": domain_id})
        rows = [r for r in rows if r.get("name") == name]
        return _group(rows[0]) if rows else None

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
        except NotFoundError:
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
        async def create() -> str:
            domain_id = await self._domain_id(self.options.group_domain)
            body = {"group": {"name": name, "domain_id": domain_id, "description": owner_marker(tenant)}}
            resp = await self._call("create_group", "POST", "/groups", body=body)
            return str(resp["group"]["id"])

        return await create_or_adopt(
            "openstack", tenant, name, lambda: self._group_by_name(name), create, (ConflictError,)
        )

    async def _delete_group(self, tenant: TenantRef, name: str, group_id: str | None) -> None:
        async def delete(group: _Group) -> None:
            await self._call("delete_group", "DELETE", f"/groups/{group.id}")

        await delete_marked_group(
            "openstack", tenant, name, group_id, self._get_group, lambda: self._group_by_name(name), delete
        )

    async def _add_member(self, tenant: TenantRef, group: str, group_id: str, user: PlatformUser) -> None:
        await self._call("add_group_user", "PUT", f"/groups/{group_id}/users/{user.id}")

    async def _remove_member(self, tenant: TenantRef, group: str, group_id: str, user: PlatformUser) -> None:
        try:
            await self._call("remove_group_user", "DELETE", f"/groups/{group_id}/users/{user.id}")
        except NotFoundError:
            return

    async def _grant(self, tenant: TenantRef, group: str, group_id: str, role: str) -> None:
        roles = await self._role_ids()
        if role not in roles:
            raise PermanentError(f"openstack grant: role {role!r} does not exist in Keystone")
        try:
            await self._call("assign_group_role", "PUT", self._assignment(tenant, group_id, roles[role]))
        except NotFoundError as exc:
            raise PermanentError(
                f"openstack grant {role}: project {tenant.local_id} or group {group_id} not found"
            ) from exc

    async def _revoke(self, tenant: TenantRef, group: str, group_id: str, role: str) -> None:
        role_id = (await self._role_ids()).get(role)
        if role_id is None:  # a role Keystone no longer has: nothing is assigned
            return
        try:
            await self._call("unassign_group_role", "DELETE", self._assignment(tenant, group_id, role_id))
        except NotFoundError:
            return

    @staticmethod
    def _assignment(tenant: TenantRef, group_id: str, role_id: str) -> str:
        return f"/projects/{tenant.local_id}/groups/{group_id}/roles/{role_id}"

    async def _role_ids(self) -> dict[str, str]:
        """Role name -> id (global roles); memoised per driver instance."""
        async with self._meta_lock:
            if self._roles is None:
                rows = await self._list("list_roles", "/roles", "roles", {})
                self._roles = {str(r["name"]): str(r["id"]) for r in rows if not r.get("domain_id")}
            return self._roles

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
        except ConflictError as exc:
            rows = await self._list("find_user", "/users", "users", {"name": euid, "domain_id": domain_id})
            if rows:
                return str(rows[0]["id"])
            raise RetryableError(
                f"openstack create_user: conflict for {euid!r}, but no such user yet"
            ) from exc
        user_id = str(resp["user"]["id"])
        self._users.add(PlatformUser(user_id, euid))
        self.created_users.add(user_id)
        return user_id

    async def _delete_user(self, user: PlatformUser) -> None:
        """``DELETE /v3/users/{id}`` (a 404: deleted already)."""
        try:
            await self._call("delete_user", "DELETE", f"/users/{user.id}")
        except NotFoundError:
            return

    # --- capabilities ---------------------------------------------------------------------------

    @classmethod
    def capabilities_for(cls, options: Any) -> contract.Capabilities:
        """Users are created only with ``federatedIdp.enabled``."""
        enabled = isinstance(options, OpenstackOptions) and options.federated_idp.enabled
        return dataclasses.replace(cls.capabilities, ensures_users=enabled)
