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

Graph and ARM are called as :mod:`platforms.azure.calls` says; every request is counted in
``AzureDriver.api_calls`` under an operation name. The SDKs are imported lazily, inside methods,
so importing this package is cheap.

Entra ID is eventually consistent (docs/azure.md, "How the real service behaves"): a group or
guest created a moment ago may be missing from Graph's reads, unknown to ``members/$ref`` (404, or
400 "do not exist") and to ARM (``PrincipalNotFound``) for seconds to minutes. Those calls are
retried with a short exponential backoff (``consistencyAttempts``, ``consistencyWait``); past it, an
object this replicator created within ``consistencyWindow`` (its own creates, the store's record of
a group's creation) is ``PendingError`` (the tenant is requeued), anything else ``RetryableError``.
A recorded young group that Graph does not show is pending, never vanished: vanished would make
the next plan create it again.

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
    create_group:  ``find_group`` 1 (``displayName eq``; a name over 120 characters, which Graph's
                   filter refuses: ``mailNickname eq``), + ``create_group`` 1 when it does not exist
    add_member:    ``add_member`` 1 (an existing membership is success), retried while 404/400
    remove_member: ``remove_member`` 1 (404: not a member, success)
    grant:         ``create_role_assignment`` 1 (a deterministic name; 409 RoleAssignmentExists is
                   success), retried while PrincipalNotFound
    revoke:        ``list_role_assignments`` x pages + ``delete_role_assignment`` per matching one
    delete_group:  ``get_group`` 1 (group id unknown: ``find_group`` 1) + ``delete_group`` 1
    ensure_user:   ``find_user`` 1 (who holds the address as mail, otherMails or UPN: used,
                   nobody invited) + ``invite_user`` 1 when nobody does (with B2B guests
                   enabled), once per euid and driver instance (the other tenants of the run reuse
                   the guest)

Ownership: every group this driver creates has the description
``"<OWNER_MARKER> tenant=<tenant key>"``. A group recorded in the state store counts as ours when
its description starts with the marker; a group found only by name (crash leftover) counts as ours
only when the marker also names this tenant. Entra ID does not keep display names unique: of
several groups with one name, the one marked for this tenant is taken.

Removal policy: members and role assignments on owned groups that the
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
import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from platforms import contract
from platforms.azure.arm import AzureArm
from platforms.azure.errors import UnknownPrincipalError
from platforms.azure.graph import AzureGraph, EntraGroup
from platforms.azure.names import (
    DEFAULT_GRAPH,
    GUID_ONLY,
    ROLE_PATTERN,
    assignment_name,
    batches,
    mail_nickname,
    role_guid,
)
from platforms.azure.options import AzureOptions
from platforms.contract import ObservedGroup, ObservedTenant, PendingError, PermanentError, PlatformUser
from platforms.kit.errors import ConflictError, NotFoundError
from platforms.kit.ownership import create_or_adopt, delete_marked_group, owner_marker
from platforms.kit.scan import observe_marked_groups

if TYPE_CHECKING:
    from platforms.contract import OwnedGroup, TenantRef

# Entra ID refuses control characters in a group's displayName (up to 256 characters).
_DISPLAY_NAME_PATTERN = re.compile(r"[^\x00-\x1f\x7f]+")


class AzureDriver(AzureGraph, AzureArm):
    """Entra ID security groups via Microsoft Graph, RBAC role assignments via ARM."""

    capabilities = contract.Capabilities(
        external_grants_default="remove",
        lookup_attribute="mail",  # userPrincipalName with UserByUsernameLookupStrategy (capabilities_for)
        group_name_pattern=_DISPLAY_NAME_PATTERN,  # a displayName: at most 256 characters
        role_pattern=ROLE_PATTERN,  # users are invited (ensures_users) with b2bGuestInvitation
        role_example="acdd72a7-3385-48ef-bd42-f606fba81ae7 (a role definition id)",
    )

    def _setup(self) -> None:
        super()._setup()
        self._arm_client: Any = None
        self._lookup_lock = asyncio.Lock()
        self._invite_lock = asyncio.Lock()
        self._users: dict[str, tuple[PlatformUser, ...]] = {}

    # --- lookup_users ---------------------------------------------------------------------------

    async def lookup_users(self, euids: Sequence[str]) -> dict[str, tuple[PlatformUser, ...]]:
        if not euids:
            return {}
        attribute = self.options.lookup_attribute
        async with self._lookup_lock:
            wanted = sorted({e.casefold(): e for e in euids if e.casefold() not in self._users}.items())
            asked = [value for _, value in wanted]
            found: dict[str, list[PlatformUser]] = {key: [] for key, _ in wanted}
            for batch in batches(asked):
                for row in await self._lookup(attribute, batch, guests_only=False):
                    user = self._platform_user(row, attribute)
                    if user.name.casefold() in found:
                        found[user.name.casefold()].append(user)
            if self.options.b2b_guest_invitation.enabled and attribute != "mail":
                # An invited guest's userPrincipalName is rewritten (x_domain#EXT#@...): find the
                # guests by the invited address, their mail.
                missing = [value for key, value in wanted if not found[key]]
                for batch in batches(missing):
                    for row in await self._lookup("mail", batch, guests_only=True):
                        user = self._platform_user(row, "mail")
                        if user.name.casefold() in found:
                            found[user.name.casefold()].append(user)
            for key, users in found.items():
                self._users[key] = tuple(sorted(set(users)))
            return {euid: self._users[euid.casefold()] for euid in euids}

    # --- observe --------------------------------------------------------------------------------

    async def observe(
        self, tenant: TenantRef, owned: Sequence[OwnedGroup], desired_names: Mapping[str, str]
    ) -> ObservedTenant:
        for record in owned:
            for role in record.roles:
                self._spellings.setdefault((tenant.key, role_guid(role)), role)
            if record.platform_id is not None and record.created_at is not None:
                self._note_created(record.platform_id, record.created_at.timestamp())

        # The recorded groups in one request per 15 (existence and our marker, instead of a
        # get_group each); an id Graph would refuse in a filter is still read on its own.
        recorded = [r.platform_id for r in owned if r.platform_id is not None]
        batched = [gid for gid in recorded if GUID_ONLY.fullmatch(gid)]
        known = await self._groups_by_id(batched) if batched else {}
        listed = {gid.lower() for gid in batched}

        async def by_id(group_id: str) -> EntraGroup | None:
            if group_id.lower() in listed:
                group = known.get(group_id.lower())
            else:
                group = await self._get_group(group_id)
            if group is None and self._young(group_id):
                # Created by us a moment ago: a replica that does not show it yet is lag, not a
                # deletion. Reporting it vanished would make the store forget it and the plan
                # create it again: a duplicate.
                raise PendingError(
                    f"azure observe: group {group_id}, created by this replicator "
                    f"{self._age(group_id)}, is not visible in Entra ID yet",
                    retry_after=self.options.pending_retry_after,
                )
            return group

        async def by_name(name: str) -> EntraGroup | None:
            return await self._group_by_name(name, tenant)

        # The scope's role assignments: read once, when the first group of ours is observed.
        at_scope: dict[str, list[Any]] | None = None

        async def observe_one(group: EntraGroup, alias: str) -> ObservedGroup:
            nonlocal at_scope
            if at_scope is None:
                at_scope = await self._scope_assignments(tenant)
            return await self._observe_group(tenant, group, alias, at_scope.get(group.id.lower(), ()))

        return await observe_marked_groups(tenant, owned, desired_names, by_id, by_name, observe_one)

    async def _observe_group(
        self, tenant: TenantRef, group: EntraGroup, alias: str, assignments: Sequence[Any]
    ) -> ObservedGroup:
        try:
            members = await self._members(group.id)
        except NotFoundError as exc:
            if not self._young(group.id):
                raise
            raise PendingError(
                f"azure observe: members of the new group {group.id}: {exc}",
                retry_after=self.options.pending_retry_after,
            ) from None
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
        async def create_new() -> str:
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
                raise PermanentError(
                    f"azure create_group: Graph answered without the new group's id ({name!r})"
                )
            self._note_created(str(row.id))
            return str(row.id)

        return await create_or_adopt(
            "azure", tenant, name, lambda: self._group_by_name(name, tenant), create_new
        )

    async def _add_member(self, tenant: TenantRef, group: str, group_id: str, user: PlatformUser) -> None:
        from msgraph.generated.models.reference_create import ReferenceCreate

        root = (self.options.graph_url or DEFAULT_GRAPH).rstrip("/")
        body = ReferenceCreate(odata_id=f"{root}/v1.0/directoryObjects/{user.id}")

        async def add(client: Any) -> None:
            await client.groups.by_group_id(group_id).members.ref.post(body)

        async def attempt() -> None:
            try:
                await self._graph_call("add_member", add)
            except ConflictError:
                return  # already a member

        await self._eventually(
            f"group {group_id} or user {user.name}", attempt, young=self._young(group_id, user.id)
        )

    async def _remove_member(self, tenant: TenantRef, group: str, group_id: str, user: PlatformUser) -> None:
        async def remove(client: Any) -> None:
            await client.groups.by_group_id(group_id).members.by_directory_object_id(user.id).ref.delete()

        try:
            await self._graph_call("remove_member", remove)
        except NotFoundError:
            return

    async def _grant(self, tenant: TenantRef, group: str, group_id: str, role: str) -> None:
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
            except ConflictError as exc:
                if "RoleAssignmentExists" not in str(exc):
                    raise

        await self._eventually(
            f"group {group_id} in ARM", attempt, UnknownPrincipalError, young=self._young(group_id)
        )
        self._granted[(scope.lower(), group_id.lower(), role_guid(role))] = role
        self._spellings.setdefault((tenant.key, role_guid(role)), role)

    async def _revoke(self, tenant: TenantRef, group: str, group_id: str, role: str) -> None:
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
            except NotFoundError:
                continue

    async def _delete_group(self, tenant: TenantRef, name: str, group_id: str | None) -> None:
        async def delete(group: EntraGroup) -> None:
            async def call(client: Any) -> None:
                await client.groups.by_group_id(group.id).delete()

            await self._graph_call("delete_group", call)
            self._born.pop(group.id.lower(), None)  # gone by our hand: not "not visible yet"

        await delete_marked_group(
            "azure",
            tenant,
            name,
            group_id,
            self._get_group,
            lambda: self._group_by_name(name, tenant),
            delete,
        )

    async def _delete_user(self, user: PlatformUser) -> None:
        """``DELETE /users/{id}``: a guest this replicator invited (Entra ID keeps it restorable
        among the deleted items for 30 days). A 404: deleted already."""

        async def call(client: Any) -> None:
            await client.users.by_user_id(user.id).delete()

        try:
            await self._graph_call("delete_user", call)
        except NotFoundError:
            return
        self._born.pop(user.id.lower(), None)

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
            # The address may belong to someone the lookup attribute did not find (a member whose
            # userPrincipalName or otherMails it is): Graph refuses to invite a member's address,
            # and whoever holds it is the user, not a new guest.
            holders = {str(r.id) for r in await self._users_with_address(euid)}
            if len(holders) > 1:
                raise PermanentError(
                    f"azure ensure_user: {euid!r} belongs to {len(holders)} users of the directory "
                    f"({', '.join(sorted(holders))}): nobody is invited or added"
                )
            if holders:
                user = PlatformUser(id=holders.pop(), name=euid)
            else:
                row = await self._graph_call("invite_user", invite)
                invited = row.invited_user if row is not None else None
                if invited is None or not invited.id:
                    raise PermanentError(
                        f"azure invite_user: Graph answered without the guest's id ({euid!r})"
                    )
                user = PlatformUser(id=str(invited.id), name=euid)
                self._note_created(user.id)
                self.created_users.add(user.id)
            self._users[euid.casefold()] = (user,)
            return user.id

    # --- capabilities ---------------------------------------------------------------------------

    @classmethod
    def capabilities_for(cls, options: Any) -> contract.Capabilities:
        """The lookup attribute follows the lookup strategy; users are invited only with B2B guests."""
        if not isinstance(options, AzureOptions):
            return cls.capabilities
        return dataclasses.replace(
            cls.capabilities,
            lookup_attribute=options.lookup_attribute,
            ensures_users=options.b2b_guest_invitation.enabled,
        )
