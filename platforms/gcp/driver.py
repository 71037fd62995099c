"""Google Cloud driver: Cloud Identity groups, IAM policy bindings on projects.

A tenant is a GCP project (``localId`` = the project id). Groups are Cloud Identity groups of the
configured customer (``parent: customers/<customerId>``) whose email is the rendered name +
``@`` + ``domain``; they carry the label ``cloudidentity.googleapis.com/groups.discussion_forum``
(a plain Google Group) and our marker as description. A role is an IAM role name (``roles/editor``,
``projects/P/roles/X``, ``organizations/O/roles/X``) bound to ``group:<email>`` in the project's
IAM policy. Users are matched by ``primaryEmail`` (Admin SDK directory, case-insensitive), or with
``userLookupStrategy: externalId`` by one of their ``externalIds`` values; they are never created.
google-api-python-client and google-auth are imported lazily, inside methods, so importing this
package is cheap.

Every request is counted in ``GcpDriver.api_calls`` under the discovery method name (see
:mod:`platforms.gcp.calls`).

API calls per operation (names as counted; M members of a group, U users of the customer):

``lookup_users`` (email)
    ``users.get`` 1 per euid not seen before on this driver instance; when more than
    ``userListThreshold`` euids are unknown, ``users.list`` x ceil(U/500) once instead (the whole
    directory is indexed and every later lookup on the instance makes no call). A 403 answer
    (outside the customer's domains, or no permission): + ``users.list`` with
    ``query=email:'<euid>'`` 1 (see :mod:`platforms.gcp.users`).
``lookup_users`` (externalId)
    ``users.list`` with ``query=externalId:'<euid>'`` 1 (x pages) per euid not seen before.
``observe`` (per tenant, once, when it has an owned group)
    ``projects.getIamPolicy`` 1 (``requestedPolicyVersion: 3``).
``observe`` (per owned group)
    ``groups.get`` 1 (a pending record without id: ``groups.lookup`` 1 + ``groups.get`` 1),
    ``groups.memberships.list`` x ceil(M/1000).
``observe`` (per desired name that no owned record has)
    ``groups.lookup`` 1, + ``groups.get`` 1 when the name is taken.
    A no-op observe of a tenant with G owned groups, without a scan: 2 G + 1 calls.
``prepare`` (once per run, when the run names >= ``groupScanThreshold`` groups)
    ``groups.list`` (``parent=customers/<customerId>``, ``view=FULL``: the description is the
    marker) x ceil(groups of the customer / 500), at most max(1, named groups // 2) pages, else
    no scan; observe then takes every ``groups.get``/``groups.lookup`` answer from the scan (a
    recorded id the scan lacks is still read with ``groups.get``, a name it lacks is free): a no-op
    observe of a tenant with G owned groups is G + 1 calls. A scanned group deleted since the scan
    (its ``groups.memberships.list`` answers 404) is forgotten and read again: ``groups.get`` 1
    (vanished) for a recorded id, nothing for a name (free).
``apply``
    create_group:  ``groups.lookup`` 1 (+ ``groups.get`` 1 if it exists), else ``groups.create`` 1
                   (an Operation with done:false: + ``groups.lookup`` 1; not there yet is pending,
                   and the email is never created again by this instance)
    add_member:    ``groups.memberships.create`` 1 (409 ALREADY_EXISTS: success)
    remove_member: ``groups.memberships.lookup`` 1 unless observe saw the membership, then
                   ``groups.memberships.delete`` 1 (404: success)
    grant/revoke:  ``projects.getIamPolicy`` 1, + ``projects.setIamPolicy`` 1 unless the binding is
                   already as wanted; a 409 (the policy changed since it was read: stale etag)
                   repeats both, at most ``policyAttempts`` times; + ``groups.get`` 1 when the
                   group's email is not known from observe or create; a 400 "Group <our email>
                   does not exist." + ``groups.get`` 1: Cloud Identity has the group, so IAM has
                   not caught up with its creation yet (pending), else permanent
    delete_group:  ``groups.get`` 1 (id unknown: ``groups.lookup`` 1 + ``groups.get`` 1)
                   + ``groups.delete`` 1

Policy edits change only the ``group:<email>`` member of unconditional bindings of the role in
question: other members, other roles and every conditional binding are written back as read, and a
binding is dropped only when removing our group left it empty.

Ownership: every group this driver creates has the description ``"<OWNER_MARKER> tenant=<tenant
key>"``. A group recorded in the state store counts as ours when its description starts with the
marker; a group found only by name (crash leftover) counts as ours only when the marker also names
this tenant. (Cloud Identity accepts only its own label keys, so the marker cannot be a label.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from platforms import contract
from platforms.contract import (
    ObservedGroup,
    ObservedTenant,
    PendingError,
    PermanentError,
    PlatformUser,
    RetryableError,
)
from platforms.gcp.errors import BadRequestError
from platforms.gcp.options import GcpOptions
from platforms.gcp.policy import bound_roles, policy_with
from platforms.gcp.records import Group, group_record
from platforms.gcp.users import GcpUsers
from platforms.kit.errors import ConflictError, NotFoundError
from platforms.kit.ownership import adoptable, create_or_adopt, delete_marked_group, owner_marker
from platforms.kit.scan import GoneSinceScan, GroupScan, observe_marked_groups

if TYPE_CHECKING:
    from platforms.contract import OwnedGroup, TenantRef

DISCUSSION_FORUM_LABEL = "cloudidentity.googleapis.com/groups.discussion_forum"
"""The label of a plain Google Group (Cloud Identity requires one label)."""

_MEMBERSHIP_PAGE = 1000  # the most Cloud Identity allows with view BASIC
_GROUP_PAGE = 500  # the most groups.list allows with view FULL (BASIC: 1000, but need not carry the marker)

# The email local part of a Google group: lowercase letters, digits, - _ ' and single periods,
# not at either end; at most 64 characters before the @ (63 here keeps a margin).
_GROUP_NAME = re.compile(r"(?!\.)(?!.*\.\.)[a-z0-9_'.-]+(?<!\.)")
_CREATE_PATIENCE = 900.0
"""Seconds a create that answered done:false counts as still running."""
_UNKNOWN_GROUP = re.compile(r"\bGroup (\S+@\S+?) does not exist\.")
"""setIamPolicy's 400 for a group IAM does not know (yet): "Group <email> does not exist."."""
_ROLE = re.compile(
    r"roles/[A-Za-z0-9_.]+"
    r"|projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/roles/[A-Za-z0-9_.]{1,64}"
    r"|organizations/[0-9]+/roles/[A-Za-z0-9_.]{1,64}"
)


class GcpDriver(GcpUsers):
    """Cloud Identity groups of one customer, IAM policy bindings on projects."""

    capabilities = contract.Capabilities(
        external_grants_default="keep",
        lookup_attribute="primaryEmail",  # externalIds with userLookupStrategy externalId
        max_group_name_length=63,
        group_name_pattern=_GROUP_NAME,
        role_pattern=_ROLE,
        role_example="roles/editor",
    )

    ensure_user_refusal = "users come from Cloud Identity, none are created"

    def _setup(self) -> None:
        super()._setup()
        self._emails: dict[str, str] = {}
        """Group resource name -> email, from every group this instance read or created."""
        self._memberships: dict[tuple[str, str], str] = {}
        """(group resource name, member email lowercase) -> membership resource name."""
        self._scan: GroupScan[Group] | None = None
        """This run's ``groups.list`` scan, by resource name and email (None: read group by group)."""
        self._creating: dict[str, float] = {}
        """Email -> when its ``groups.create`` answered done:false: being created, not created again
        for ``_CREATE_PATIENCE`` seconds (then a create that Google dropped is sent again; one that
        is still running answers 409)."""

    # --- observe --------------------------------------------------------------------------------

    async def observe(
        self, tenant: TenantRef, owned: Sequence[OwnedGroup], desired_names: Mapping[str, str]
    ) -> ObservedTenant:
        policy: dict[str, Any] | None = None
        policy_lock = asyncio.Lock()
        done: dict[tuple[str, str], ObservedGroup] = {}
        by_id: dict[str, Group | None] = {}
        by_name: dict[str, Group | None] = {}

        async def read_id(group_id: str) -> Group | None:
            if group_id not in by_id:
                by_id[group_id] = await self._observed_by_id(group_id)
            return by_id[group_id]

        async def read_name(name: str) -> Group | None:
            if name not in by_name:
                by_name[name] = await self._observed_by_name(name)
            return by_name[name]

        async def observe_one(group: Group, alias: str) -> ObservedGroup:
            nonlocal policy
            if (group.id, alias) in done:  # observed before a group of the scan turned out gone
                return done[(group.id, alias)]
            async with policy_lock:  # one getIamPolicy per tenant, however many groups
                if policy is None:
                    policy = await self._policy(tenant)
            try:
                members = await self._members(group.id)
            except NotFoundError:
                if self._scan is not None and self._scan.forget(group):
                    # asked again from the start: forget this group's answers, keep the others
                    for memo in (by_id, by_name):
                        for key in [k for k, g in memo.items() if g is group]:
                            del memo[key]
                    raise GoneSinceScan(group.id) from None
                raise
            observed = ObservedGroup(
                id=group.id,
                name=group.name,
                alias=alias,
                members=members,
                roles=bound_roles(policy, group.email),
            )
            done[(group.id, alias)] = observed
            return observed

        return await observe_marked_groups(tenant, owned, desired_names, read_id, read_name, observe_one)

    async def prepare(self, groups: int) -> None:
        """One ``groups.list`` scan of the customer's groups for a run that names at least
        ``groupScanThreshold`` groups, abandoned once it has made ``groups // 2`` calls (a large
        customer and a small run: reading group by group is cheaper). An error leaves no scan (the
        engine logs it; observe reads group by group)."""
        self._scan = None
        threshold = self.options.group_scan_threshold
        if not threshold or groups < threshold:
            return
        parent = f"customers/{self.options.customer_id}"
        pages = self._paged(
            "cloudidentity",
            "groups.list",
            lambda s, t: s.groups().list(parent=parent, view="FULL", pageSize=_GROUP_PAGE, pageToken=t),
            max(1, groups // 2),
        )
        found: list[Group] = []
        async for page in pages:
            try:
                found += [group_record(item) for item in page.get("groups") or []]
            except (KeyError, TypeError, AttributeError):
                raise PermanentError("gcp groups.list: a group without name or groupKey") from None
        if pages.complete:
            self._scan = GroupScan(found, lambda g: g.email)

    def _scanned(self, group: Group) -> Group:
        self._emails[group.id] = group.email  # a later grant/revoke needs no groups.get
        return group

    async def _observed_by_id(self, group_id: str) -> Group | None:
        """A recorded group: from this run's scan when it has the id (no call), else ``groups.get``
        (deleted, or created after the scan)."""
        if self._scan is not None and group_id in self._scan.by_id:
            return self._scanned(self._scan.by_id[group_id])
        return await self._get_group(group_id)

    async def _observed_by_name(self, name: str) -> Group | None:
        """A group by name: from this run's scan (absent there: free; ``create_group`` asks Cloud
        Identity again before it creates), else ``groups.lookup`` + ``groups.get``."""
        if self._scan is not None:
            group = self._scan.by_key.get(self._email(name))
            return None if group is None else self._scanned(group)
        return await self._group_by_name(name)

    async def _get_group(self, group_id: str) -> Group | None:
        try:
            item = await self._call("cloudidentity", "groups.get", lambda s: s.groups().get(name=group_id))
        except NotFoundError:
            return None
        group = group_record(item)
        self._emails[group.id] = group.email
        return group

    async def _group_by_name(self, name: str) -> Group | None:
        email = self._email(name)
        try:
            found = await self._call(
                "cloudidentity", "groups.lookup", lambda s: s.groups().lookup(groupKey_id=email)
            )
        except NotFoundError:
            return None
        return await self._get_group(str(found["name"]))

    async def _group_email(self, group_id: str, name: str) -> str:
        if group_id not in self._emails:
            group = await self._get_group(group_id)
            if group is None:
                raise PermanentError(f"gcp: group {name!r} ({group_id}) does not exist")
        return self._emails[group_id]

    async def _members(self, group_id: str) -> frozenset[PlatformUser]:
        rows = await self._pages(
            "cloudidentity",
            "groups.memberships.list",
            "memberships",
            lambda s, t: (
                s.groups()
                .memberships()
                .list(parent=group_id, view="BASIC", pageSize=_MEMBERSHIP_PAGE, pageToken=t)
            ),
        )
        members: set[PlatformUser] = set()
        for row in rows:
            key = str((row.get("preferredMemberKey") or {}).get("id") or "")
            if not key:
                continue
            members.add(PlatformUser(id=key.lower(), name=key))
            if row.get("name"):
                self._memberships[(group_id, key.lower())] = str(row["name"])
        return frozenset(members)

    async def _policy(self, tenant: TenantRef, operation: str = "projects.getIamPolicy") -> dict[str, Any]:
        resource = f"projects/{tenant.local_id}"
        body = {"options": {"requestedPolicyVersion": 3}}
        try:
            policy = await self._call(
                "cloudresourcemanager",
                operation,
                lambda s: s.projects().getIamPolicy(resource=resource, body=body),
            )
        except NotFoundError as exc:
            raise PermanentError(f"gcp: project {tenant.local_id!r} not found: {exc}") from None
        return dict(policy or {})

    # --- apply ----------------------------------------------------------------------------------

    async def _create_group(self, tenant: TenantRef, name: str) -> str:
        email = self._email(name)

        def foreign(group: Group) -> str:
            return (
                f"gcp create_group: a group {group.email!r} already exists and is not ours "
                f"({group.id}, for {tenant.key})"
            )

        async def create() -> str:
            body = {
                "groupKey": {"id": email},
                "parent": f"customers/{self.options.customer_id}",
                "displayName": name,
                "description": owner_marker(tenant),
                "labels": {DISCUSSION_FORUM_LABEL: ""},
            }
            started = self._creating.get(email)
            if started is not None and time.monotonic() - started < _CREATE_PATIENCE:
                # accepted earlier, not visible yet: no second create
                raise PendingError(f"gcp create_group: {email!r} is still being created", self._pending_after)
            # EMPTY: no initial owner ("can only be used by admins of the domain", which the
            # identity is); WITH_INITIAL_OWNER would make the caller an OWNER member of every group.
            op = await self._call(
                "cloudidentity",
                "groups.create",
                lambda s: s.groups().create(body=body, initialGroupConfig="EMPTY"),
            )
            if op.get("error"):
                raise PermanentError(f"gcp create_group {email}: {op['error'].get('message') or op['error']}")
            created = (op.get("response") or {}).get("name") if op.get("done") else None
            if created:
                self._emails[str(created)] = email
                return str(created)
            # done:false (Cloud Identity v1 has no operations.get): the group is there once lookup finds it
            self._creating[email] = time.monotonic()
            found = adoptable(await self._group_by_name(name), tenant, foreign)
            if found is None:
                raise PendingError(f"gcp create_group: {email!r} is still being created", self._pending_after)
            return found

        return await create_or_adopt(
            "gcp", tenant, email, lambda: self._group_by_name(name), create, (ConflictError,), foreign
        )

    async def _add_member(self, tenant: TenantRef, group: str, group_id: str, user: PlatformUser) -> None:
        body = {"preferredMemberKey": {"id": user.id}, "roles": [{"name": "MEMBER"}]}
        try:
            await self._call(
                "cloudidentity",
                "groups.memberships.create",
                lambda s: s.groups().memberships().create(parent=group_id, body=body),
            )
        except ConflictError:  # ALREADY_EXISTS
            return
        except NotFoundError as exc:
            raise PermanentError(f"gcp add_member {user.id} to {group_id}: {exc}") from None

    async def _remove_member(self, tenant: TenantRef, group: str, group_id: str, user: PlatformUser) -> None:
        key = (group_id, user.id.lower())
        name = self._memberships.get(key)
        if name is None:
            try:
                found = await self._call(
                    "cloudidentity",
                    "groups.memberships.lookup",
                    lambda s: s.groups().memberships().lookup(parent=group_id, memberKey_id=user.id),
                )
            except NotFoundError:
                return
            name = str(found["name"])
        with contextlib.suppress(NotFoundError):
            await self._call(
                "cloudidentity",
                "groups.memberships.delete",
                lambda s: s.groups().memberships().delete(name=name),
            )
        self._memberships.pop(key, None)

    async def _grant(self, tenant: TenantRef, group: str, group_id: str, role: str) -> None:
        await self._edit_policy(tenant, group, group_id, role, bound=True)

    async def _revoke(self, tenant: TenantRef, group: str, group_id: str, role: str) -> None:
        await self._edit_policy(tenant, group, group_id, role, bound=False)

    async def _edit_policy(
        self, tenant: TenantRef, group: str, group_id: str, role: str, bound: bool
    ) -> None:
        email = await self._group_email(group_id, group)
        resource = f"projects/{tenant.local_id}"
        verb = "grant" if bound else "revoke"
        for _ in range(self.options.policy_attempts):
            policy = await self._policy(tenant)
            edited = policy_with(policy, role, email, bound)
            if edited is None:
                return
            try:
                await self._call(
                    "cloudresourcemanager",
                    "projects.setIamPolicy",
                    _set_policy(resource, edited),
                )
                return
            except ConflictError:  # ABORTED: someone changed the policy since we read it
                continue
            except BadRequestError as exc:
                what = f"gcp {verb} {role} for group:{email} on {resource}"
                if await self._unknown_to_iam(exc, group_id, email):
                    raise PendingError(
                        f"{what}: IAM does not know the group yet ({exc})", self._pending_after
                    ) from None
                raise PermanentError(f"{what}: {exc}") from None
            except PermanentError as exc:
                raise PermanentError(f"gcp {verb} {role} for group:{email} on {resource}: {exc}") from None
        raise RetryableError(
            f"gcp {verb} {role} on {resource}: the policy kept changing under us "
            f"({self.options.policy_attempts} attempts)"
        )

    async def _unknown_to_iam(self, refusal: BadRequestError, group_id: str, email: str) -> bool:
        """Whether ``refusal`` is IAM's lag behind Cloud Identity: it says "Group <our email> does not
        exist." while Cloud Identity has that very group under the id we hold (created by this run
        or an earlier one). Anything else, a group that is really gone or another group named,
        stays a permanent refusal."""
        said = _UNKNOWN_GROUP.search(str(refusal))
        if said is None or said[1].casefold() != email.casefold():
            return False
        try:
            item = await self._call("cloudidentity", "groups.get", lambda s: s.groups().get(name=group_id))
        except NotFoundError:
            return False
        return group_record(item).email == email.lower()

    @property
    def _pending_after(self) -> float | None:
        return self.options.pending_retry_after

    async def _delete_group(self, tenant: TenantRef, name: str, group_id: str | None) -> None:
        async def delete(group: Group) -> None:
            await self._call("cloudidentity", "groups.delete", lambda s: s.groups().delete(name=group.id))

        await delete_marked_group(
            "gcp",
            tenant,
            name,
            group_id,
            self._get_group,
            lambda: self._group_by_name(name),
            delete,
            label=lambda group: group.email,
        )

    # --- capabilities ---------------------------------------------------------------------------

    @classmethod
    def capabilities_for(cls, options: Any) -> contract.Capabilities:
        """The lookup attribute follows ``userLookupStrategy``."""
        if isinstance(options, GcpOptions) and options.user_lookup_strategy == "externalId":
            return dataclasses.replace(cls.capabilities, lookup_attribute="externalIds")
        return cls.capabilities


def _set_policy(resource: str, policy: dict[str, Any]) -> Callable[[Any], Any]:
    return lambda service: service.projects().setIamPolicy(resource=resource, body={"policy": policy})
