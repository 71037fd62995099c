"""AWS IAM Identity Center driver.

A tenant is an AWS account. Groups live in the Identity Center identity store; a role is a
permission set ARN assigned to a group on the account. Users come from the identity source
(they are matched by ``userName``, never created). boto3/botocore are imported lazily, inside
methods, so importing this package is cheap.

Every call is counted in ``AwsDriver.api_calls`` by its boto3 operation name (see
:mod:`platforms.aws.calls`).

API calls per operation (U users in the identity store, M members of a group, A assignments):

``lookup_users``
    ``list_users`` x ceil(U/100), once per driver instance (the case-insensitive index is kept);
    every later lookup on the same instance makes no call.
``observe`` (per owned group)
    ``describe_group`` 1 (a pending record without id: ``get_group_id`` 1 + ``describe_group`` 1),
    ``list_group_memberships`` x ceil(M/100),
    ``list_account_assignments_for_principal`` x ceil(A/100),
    ``describe_user`` once per member the ``list_users`` scan has not seen (memoised).
``observe`` (per desired name that no owned record has)
    ``get_group_id`` 1, plus ``describe_group`` 1 when the name is taken.
    A no-op observe of a tenant with G owned groups, after a lookup: 3 G calls.
``prepare`` (once per run, when the run names >= ``groupScanThreshold`` groups)
    ``list_groups`` x ceil(groups in the identity store / 100), at most (named groups // 2) pages;
    observe then takes every ``describe_group``/``get_group_id`` answer from the scan (an owned id
    the scan lacks is still described): a no-op observe is 2 G calls. A group of the scan that is
    deleted before observe reads its members (``list_group_memberships`` answers
    ResourceNotFoundException) is dropped from the scan and the tenant is observed again: the calls
    made so far are repeated, the failed read counts 1, and the group then costs ``describe_group``
    1 (vanished), or nothing when it was found by name (the name is free).
``apply``
    create_group:  ``get_group_id`` 1 (+ ``describe_group`` 1 if it exists), else ``create_group`` 1
    add_member:    ``get_group_membership_id`` 1 (+ ``create_group_membership`` 1)
    remove_member: ``get_group_membership_id`` 1 (+ ``delete_group_membership`` 1)
    grant:         ``list_account_assignments`` x pages, + ``create_account_assignment`` 1
                   + ``describe_account_assignment_creation_status`` per poll while IN_PROGRESS
    revoke:        ``list_account_assignments`` x pages, + ``delete_account_assignment`` 1
                   + ``describe_account_assignment_deletion_status`` per poll while IN_PROGRESS
    delete_group:  ``describe_group`` 1 + ``delete_group`` 1 (group id unknown: + ``get_group_id`` 1)
    ensure_user:   not supported (PermanentError, no call)
``assume_role`` (sts)
    once per credential lifetime, only with ``assumeRoleArn``.

Ownership: every group this driver creates has the description
``"<OWNER_MARKER> tenant=<tenant key>"``. A group recorded in the state store counts as ours when
its description starts with the marker; a group found only by name (crash leftover) counts as
ours only when the marker also names this tenant.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from platforms import contract
from platforms.aws.calls import AwsCalls
from platforms.aws.errors import CONFLICTS
from platforms.contract import ObservedGroup, ObservedTenant, PermanentError, PlatformUser, RetryableError
from platforms.kit.errors import NotFoundError
from platforms.kit.ownership import create_or_adopt, delete_marked_group, owner_marker
from platforms.kit.scan import GoneSinceScan, GroupScan, observe_marked_groups
from platforms.kit.users import UserIndex

if TYPE_CHECKING:
    from platforms.contract import OwnedGroup, TenantRef

# The identity store's DisplayName pattern is [\p{L}\p{M}\p{S}\p{N}\p{P}\t\n\r \xa0\u3000]+. Python's
# `re` has no Unicode property classes, so this is its complement for assigned code points: it
# refuses control (Cc except \t\n\r), format (Cf), private-use (Co), surrogate (Cs) and separator
# (Zs/Zl/Zp except space, NBSP, U+3000) characters as of Unicode 14; unassigned code points pass.
_DISPLAY_NAME_PATTERN = re.compile(
    r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"
    r"\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u2064\u2066-\u206f\ud800-\uf8ff\ufeff\ufff9-\ufffb"
    r"\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    r"\U000e0020-\U000e007f\U000f0000-\U000ffffd\U00100000-\U0010fffd]+"
)


@dataclass(frozen=True)
class _Group:
    id: str
    name: str
    description: str


class AwsDriver(AwsCalls):
    """IAM Identity Center: groups in the identity store, permission sets assigned on accounts."""

    capabilities = contract.Capabilities(
        external_grants_default="keep",
        lookup_attribute="userName",
        group_name_prefix="mst-",
        max_group_name_length=1024,
        group_name_pattern=_DISPLAY_NAME_PATTERN,
        # AWS writes permissionSet/...; moto writes instance/... for the same ARN: accept both.
        role_pattern=re.compile(
            r"arn:aws[a-z-]*:sso:::(?:permissionSet|instance)/ssoins-[A-Za-z0-9.-]+/ps-[A-Za-z0-9.-]+"
        ),
        role_example="arn:aws:sso:::permissionSet/ssoins-1234567890abcdef/ps-1234567890abcdef",
    )

    ensure_user_refusal = "not supported, IAM Identity Center users come from its identity source"
    role_noun = "permission set"

    def _setup(self) -> None:
        super()._setup()
        self._users = UserIndex(self._all_users)
        self._users_by_id: dict[str, PlatformUser] = {}
        self._scan: GroupScan[_Group] | None = None

    # --- lookup_users ---------------------------------------------------------------------------

    async def lookup_users(self, euids: Sequence[str]) -> dict[str, tuple[PlatformUser, ...]]:
        return await self._users.lookup(euids)

    async def _all_users(self) -> list[PlatformUser]:
        """Every user of the identity store (one scan per driver, by :class:`UserIndex`); each is
        remembered by id, so observe need not describe it."""
        raw = await self._store_pages("list_users", "Users")
        users = [PlatformUser(id=item["UserId"], name=item.get("UserName") or "") for item in raw]
        self._users_by_id.update((user.id, user) for user in users)
        return users

    def remember_users(self, users: Iterable[PlatformUser]) -> None:
        for user in users:
            self._users_by_id.setdefault(user.id, user)

    async def _user(self, user_id: str) -> PlatformUser:
        known = self._users_by_id.get(user_id)
        if known is not None:
            return known
        resp = await self._store_read("describe_user", UserId=user_id)
        if resp is None:
            # moto keeps the memberships of a deleted user (AWS deletes them with the user).
            # Report the stale member under its id so the plan removes it.
            return PlatformUser(id=user_id, name=user_id)
        user = PlatformUser(id=resp["UserId"], name=resp.get("UserName") or user_id)
        self._users_by_id[user_id] = user
        return user

    # --- observe --------------------------------------------------------------------------------

    async def observe(
        self, tenant: TenantRef, owned: Sequence[OwnedGroup], desired_names: Mapping[str, str]
    ) -> ObservedTenant:
        async def observe_one(group: _Group, alias: str) -> ObservedGroup:
            return await self._observe_group(tenant, group, alias)

        return await observe_marked_groups(
            tenant, owned, desired_names, self._observed_by_id, self._observed_by_name, observe_one
        )

    async def prepare(self, groups: int) -> None:
        """One ``ListGroups`` scan of the identity store for a run that names at least
        ``groupScanThreshold`` groups, abandoned once it has made ``groups // 2`` calls (a large
        identity store and a small run: reading group by group is cheaper)."""
        self._scan = None
        threshold = self.options.group_scan_threshold
        if not threshold or groups < threshold:
            return
        pages = self._paged(
            "identitystore",
            "list_groups",
            max(1, groups // 2),
            IdentityStoreId=self.options.identity_store_id,
        )
        found: list[_Group] = []
        async for page in pages:
            found += [
                _Group(g["GroupId"], g.get("DisplayName", ""), g.get("Description") or "")
                for g in page.get("Groups", [])
            ]
        if pages.complete:
            self._scan = GroupScan(found, lambda g: g.name)

    async def _observed_by_id(self, group_id: str) -> _Group | None:
        """A recorded group: from this run's scan when it has the id (no call), else described."""
        if self._scan is not None and group_id in self._scan.by_id:
            return self._scan.by_id[group_id]
        return await self._describe_group(group_id)

    async def _observed_by_name(self, name: str) -> _Group | None:
        """A group by name: from this run's scan (absent there: free; ``create_group`` asks the
        identity store again before it creates), else ``GetGroupId`` + ``DescribeGroup``."""
        if self._scan is not None:
            return self._scan.by_key.get(name)
        return await self._group_by_name(name)

    async def _describe_group(self, group_id: str) -> _Group | None:
        resp = await self._store_read("describe_group", GroupId=group_id)
        if resp is None:
            return None
        return _Group(resp["GroupId"], resp.get("DisplayName", ""), resp.get("Description") or "")

    async def _group_by_name(self, name: str) -> _Group | None:
        unique = {"UniqueAttribute": {"AttributePath": "displayName", "AttributeValue": name}}
        resp = await self._store_read("get_group_id", AlternateIdentifier=unique)
        if resp is None:
            return None
        return await self._describe_group(resp["GroupId"])

    async def _observe_group(self, tenant: TenantRef, group: _Group, alias: str) -> ObservedGroup:
        try:
            memberships = await self._store_pages(
                "list_group_memberships", "GroupMemberships", GroupId=group.id
            )
        except NotFoundError:
            # Only a group this observe took from the scan: one it described itself and that is
            # gone a moment later fails the observation, as before.
            if self._scan is not None and self._scan.forget(group):
                raise GoneSinceScan(group.id) from None
            raise
        members: set[PlatformUser] = set()
        for membership in memberships:
            user_id = (membership.get("MemberId") or {}).get("UserId")
            if user_id:
                members.add(await self._user(user_id))
        assignments = await self._assignments(
            "list_account_assignments_for_principal",
            PrincipalId=group.id,
            PrincipalType="GROUP",
            Filter={"AccountId": tenant.local_id},
        )
        roles = {
            a["PermissionSetArn"]
            for a in assignments
            if a.get("AccountId", tenant.local_id) == tenant.local_id and "PermissionSetArn" in a
        }
        return ObservedGroup(
            id=group.id, name=group.name, alias=alias, members=frozenset(members), roles=frozenset(roles)
        )

    # --- apply ----------------------------------------------------------------------------------

    async def _create_group(self, tenant: TenantRef, name: str) -> str:
        async def create() -> str:
            resp = await self._store("create_group", DisplayName=name, Description=owner_marker(tenant))
            return str(resp["GroupId"])

        return await create_or_adopt(
            "aws", tenant, name, lambda: self._group_by_name(name), create, CONFLICTS
        )

    async def _delete_group(self, tenant: TenantRef, name: str, group_id: str | None) -> None:
        async def delete(group: _Group) -> None:
            await self._store("delete_group", GroupId=group.id)

        await delete_marked_group(
            "aws", tenant, name, group_id, self._describe_group, lambda: self._group_by_name(name), delete
        )

    async def _add_member(self, tenant: TenantRef, group: str, group_id: str, user: PlatformUser) -> None:
        if await self._membership_id(group_id, user.id) is not None:
            return
        try:
            await self._store("create_group_membership", GroupId=group_id, MemberId={"UserId": user.id})
        except CONFLICTS as exc:
            if await self._membership_id(group_id, user.id) is None:
                raise RetryableError(
                    f"aws create_group_membership: conflict for {user.name!r}, but no membership yet"
                ) from exc

    async def _remove_member(self, tenant: TenantRef, group: str, group_id: str, user: PlatformUser) -> None:
        membership_id = await self._membership_id(group_id, user.id)
        if membership_id is None:
            return
        await self._store_read("delete_group_membership", MembershipId=membership_id)

    async def _grant(self, tenant: TenantRef, group: str, group_id: str, role: str) -> None:
        await self._set_assignment(tenant, role, group_id, assigned=True)

    async def _revoke(self, tenant: TenantRef, group: str, group_id: str, role: str) -> None:
        await self._set_assignment(tenant, role, group_id, assigned=False)

    async def _set_assignment(self, tenant: TenantRef, role: str, group_id: str, assigned: bool) -> None:
        """Create (``assigned``) or delete the assignment of ``role`` to the group on the account,
        and wait until AWS has done it. Checked first, because moto stores a duplicate assignment
        as a second row; a conflict is success when the assignment is as wanted by then; a delete
        that finds nothing is success."""
        if await self._has_assignment(tenant, role, group_id) == assigned:
            return
        verb = "create" if assigned else "delete"
        operation = f"{verb}_account_assignment"
        try:
            resp = await self._call("sso-admin", operation, **self._assignment(tenant, role, group_id))
        except NotFoundError:
            if assigned:
                raise
            return
        except CONFLICTS as exc:
            if await self._has_assignment(tenant, role, group_id) == assigned:
                return
            state = "not assigned yet" if assigned else "still assigned"
            raise RetryableError(f"aws {operation}: conflict for {role}, {state}") from exc
        await self._wait(assigned, resp, f"{operation} of {role} on {tenant.local_id}")

    async def _membership_id(self, group_id: str, user_id: str) -> str | None:
        resp = await self._store_read(
            "get_group_membership_id", GroupId=group_id, MemberId={"UserId": user_id}
        )
        return None if resp is None else str(resp["MembershipId"])

    # --- sso-admin assignments ------------------------------------------------------------------

    async def _has_assignment(self, tenant: TenantRef, role: str, group_id: str) -> bool:
        rows = await self._assignments(
            "list_account_assignments", AccountId=tenant.local_id, PermissionSetArn=role
        )
        return any(r.get("PrincipalType") == "GROUP" and r.get("PrincipalId") == group_id for r in rows)

    async def _wait(self, creating: bool, answer: dict[str, Any], what: str) -> None:
        """Poll an account assignment request (``answer``: the create's or delete's) until it is done."""
        kind = "Creation" if creating else "Deletion"
        operation = f"describe_account_assignment_{kind.lower()}_status"
        request_key = f"AccountAssignment{kind}RequestId"
        status_key = f"AccountAssignment{kind}Status"
        status = answer.get(status_key) or {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.poll_timeout
        while True:
            state = status.get("Status")
            if state == "SUCCEEDED":
                return
            if state == "FAILED":
                reason = status.get("FailureReason") or "no reason given"
                raise PermanentError(f"aws {what} failed: {reason}")
            request_id = status.get("RequestId")
            if not request_id:
                raise PermanentError(f"aws {what}: status {state!r} without a request id")
            if loop.time() >= deadline:
                raise RetryableError(
                    f"aws {what}: still {state} after {self.options.poll_timeout:g} s (request {request_id})"
                )
            await asyncio.sleep(self.options.poll_interval)
            resp = await self._call(
                "sso-admin", operation, InstanceArn=self.options.instance_arn, **{request_key: request_id}
            )
            status = resp.get(status_key) or {}

    def _assignment(self, tenant: TenantRef, role: str, group_id: str) -> dict[str, str]:
        return {
            "InstanceArn": self.options.instance_arn,
            "TargetId": tenant.local_id,
            "TargetType": "AWS_ACCOUNT",
            "PermissionSetArn": role,
            "PrincipalType": "GROUP",
            "PrincipalId": group_id,
        }
