"""Kubernetes and OpenShift drivers.

Kubernetes has no group objects, so the contract's "group" is mapped onto objects in the tenant's
namespace (the tenant's ``localId``):

* the **anchor**: a ConfigMap named after the group, labelled ``app.kubernetes.io/managed-by:
  replicator``, annotated with the tenant key and the group name; its ``data.members`` is the JSON
  list of member user names. The group's platform id is the anchor's ``metadata.uid``.
* one **RoleBinding** per ClusterRole granted to the group, carrying the same label/annotations.
  It is named ``<group>`` when that name is free, else ``<group>-<first 8 hex of sha256(role)>``
  (so a changed mapping can create the new binding before the old one is deleted: ``roleRef`` is
  immutable). Subjects: every member as ``kind: User`` (``subjects: user``), or the single
  ``kind: Group, name: <group>`` (``subjects: group``; then the cluster's authenticator decides who
  is in the group and the anchor's list is kept for reporting only).

``add_member``/``remove_member`` update the anchor and the subjects of every binding of the group;
``grant`` creates (or repairs the subjects of) the binding for a ClusterRole; ``revoke`` deletes it;
``delete_group`` deletes the bindings and then the anchor. ``observe`` reports members = anchor list
plus every ``User`` subject found on the group's bindings (an extra subject is thus removed by the
plan), and roles = the ``roleRef`` of every binding *whose subjects are complete* (a binding that
lost a subject is left out of the roles, so the plan grants it again, which repairs its subjects).
A deleted anchor makes the group "vanished": the plan recreates it.

OpenShift: the group is a cluster-scoped ``user.openshift.io/v1`` Group (``users: [...]``) named
after the group, labelled/annotated the same way; roles are RoleBindings in the project with the
single subject ``kind: Group``. The roles reported for a group are the roleRefs of *every*
RoleBinding in the project naming the Group (ours or not: external grants are kept by default).

Users: Kubernetes has no user objects (nor, for this driver, OpenShift: users appear at first
login), so ``lookup_users`` answers every euid with one ``PlatformUser(id=euid, name=euid)`` and
makes no call.

Ownership: an object counts as ours when it carries the managed-by label; an object found only by
name (a create the state store never confirmed) counts as ours only when the tenant annotation names
this tenant. Nothing else is ever changed or deleted (a foreign binding named like our group is
reported as FOREIGN_GROUP_NAME_TAKEN). Namespaces are created when ``createNamespaces`` is true and
never deleted.

Every request goes through ``_request`` (the ``kubernetes`` client's REST layer with plain dict
manifests, run in a worker thread, inside ``self.budget``), which counts it in ``api_calls`` by
``"<VERB> <kind>"`` and maps HTTP errors to the contract's error types (see
:mod:`platforms.kubernetes.base`). The ``kubernetes`` package is imported lazily.

API calls (G groups of a tenant, B bindings of a group):

``lookup_users``  none.
``observe``       Kubernetes: ``LIST configmaps`` 1 + ``LIST rolebindings`` 1 per tenant (label
                  selector), + ``GET configmaps`` and ``GET rolebindings`` 1 each per desired name that
                  is not an owned group yet. OpenShift: ``LIST groups`` 1 (label selector on the tenant
                  hash) + ``LIST rolebindings`` 1, + ``GET groups`` 1 per new desired name.
                  A no-op observe is **2 calls per tenant** on both, whatever G.
``apply``         create_group: (+ namespace GET [+ POST] once per namespace with createNamespaces)
                  ``POST`` anchor/Group 1 (conflict: + ``GET`` 1).
                  add/remove_member (Kubernetes): ``GET`` anchor 1 + ``PUT`` anchor 1 (if changed)
                  + ``LIST rolebindings`` 1 + ``PUT`` per binding whose subjects change.
                  add/remove_member (OpenShift): ``GET group`` 1 + ``PUT group`` 1 (if changed).
                  grant: (Kubernetes: ``GET`` anchor 1) + ``LIST rolebindings`` 1 + ``POST`` 1
                  (name taken: + ``POST`` 1 with the hashed name), or ``PUT`` 1 to repair subjects.
                  revoke: ``LIST rolebindings`` 1 + ``DELETE`` per binding (OpenShift, foreign
                  binding: ``PUT`` without our subject).
                  delete_group: ``LIST rolebindings`` 1 + ``DELETE`` per binding + ``GET`` 1 +
                  ``DELETE`` 1 of the anchor/Group.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from platforms import contract
from platforms.contract import ObservedGroup, ObservedTenant
from platforms.kubernetes.base import RbacDriver
from platforms.kubernetes.objects import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    binds,
    group_of,
    group_subject,
    is_ours_for,
    meta,
    role_id,
    subject_keys,
    user_subject,
    users_on,
)

if TYPE_CHECKING:
    from platforms.contract import OwnedGroup, TenantRef

# DNS-1123 subdomain (ConfigMap, Group and RoleBinding names): lowercase alphanumerics, '-' and '.',
# starting and ending with an alphanumeric, at most 253 characters. Nine of them are kept for the
# "-<hash>" suffix of a second binding of the same group.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MAX_NAME = 253 - 9
# ClusterRole names are path segments: anything but '/' and '%', not '.' or '..'.
_ROLE_NAME = re.compile(r"(?!\.\.?$)[^/%]+")


class KubernetesDriver(RbacDriver):
    """Kubernetes RBAC: per group an anchor ConfigMap plus one RoleBinding per ClusterRole."""

    capabilities = contract.Capabilities(
        external_grants_default="remove",
        lookup_attribute="User.metadata.name",
        has_groups=True,
        max_group_name_length=_MAX_NAME,
        group_name_pattern=_DNS_SUBDOMAIN,
        role_pattern=_ROLE_NAME,
        role_example="view",
    )

    ensure_user_refusal = "not supported (Kubernetes has no user objects)"

    def _anchors_path(self, tenant: TenantRef) -> str:
        return f"/api/v1/namespaces/{tenant.local_id}/configmaps"

    def _subjects(self, group: str, members: Sequence[str]) -> list[dict[str, str]]:
        if self.options.subjects == "group":
            return [group_subject(group)]
        return [user_subject(m) for m in sorted(set(members))]

    @staticmethod
    def _members(anchor: Mapping[str, Any]) -> list[str]:
        raw = (anchor.get("data") or {}).get("members") or "[]"
        try:
            members = json.loads(raw)
        except ValueError:
            return []
        return [str(m) for m in members] if isinstance(members, list) else []

    async def _anchor(self, tenant: TenantRef, name: str) -> dict[str, Any] | None:
        anchor: dict[str, Any] | None = await self._get("configmaps", f"{self._anchors_path(tenant)}/{name}")
        return anchor

    def _observe_group(
        self, anchor: Mapping[str, Any], alias: str, bindings: Sequence[Mapping[str, Any]]
    ) -> ObservedGroup:
        name = str(meta(anchor)["name"])
        members = set(self._members(anchor))
        expected = subject_keys(self._subjects(name, sorted(members)))
        roles: set[str] = set()
        for b in bindings:
            if group_of(b) != name:
                continue
            members.update(users_on(b))
            if expected <= subject_keys(b.get("subjects") or []):
                roles.add(role_id(b))
        return self._observed(anchor, alias, members, roles)

    async def observe(
        self, tenant: TenantRef, owned: Sequence[OwnedGroup], desired_names: Mapping[str, str]
    ) -> ObservedTenant:
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
        doc = await self._request(
            "LIST configmaps", "GET", self._anchors_path(tenant), query=[("labelSelector", selector)]
        )
        anchors = {str(meta(a)["name"]): a for a in (doc or {}).get("items") or []}
        bindings = await self._list_bindings(tenant, selector)
        groups: list[ObservedGroup] = []
        vanished: list[str] = []
        foreign: dict[str, str] = {}
        for record in owned:
            anchor = anchors.get(record.name)
            ours = anchor is not None and (record.platform_id is not None or is_ours_for(anchor, tenant))
            if anchor is None:
                unlabelled = await self._anchor(tenant, record.name)
                if unlabelled is None:
                    vanished.append(record.name)
                else:
                    foreign[record.name] = str(meta(unlabelled).get("uid", ""))
            elif not ours:
                foreign[record.name] = str(meta(anchor).get("uid", ""))
            else:
                groups.append(self._observe_group(anchor, record.alias, bindings))
        checked = {record.name for record in owned}
        for alias, name in desired_names.items():
            if name in checked:
                continue
            checked.add(name)
            anchor = anchors.get(name)
            if anchor is not None and is_ours_for(anchor, tenant):
                groups.append(self._observe_group(anchor, alias, bindings))
                continue
            if anchor is None:
                anchor = await self._anchor(tenant, name)
            if anchor is not None:
                foreign[name] = str(meta(anchor).get("uid", ""))
                continue
            binding = await self._get("rolebindings", f"{self._bindings_path(tenant)}/{name}")
            if binding is not None and not is_ours_for(binding, tenant):
                foreign[name] = str(meta(binding).get("uid", ""))
        return ObservedTenant(groups=tuple(groups), vanished=tuple(vanished), foreign=foreign)

    async def _create_group(self, tenant: TenantRef, name: str) -> str:
        return await self._create_object(
            tenant,
            name,
            ("v1", "ConfigMap"),
            self._anchors_path(tenant),
            {"data": {"members": "[]"}},
            lambda: self._anchor(tenant, name),
            f"kubernetes: conflict creating {name!r}, but it does not exist",
            f"kubernetes: a ConfigMap {name!r} already exists in {tenant.local_id} and is not ours",
        )

    async def _owned_anchor(self, tenant: TenantRef, name: str) -> dict[str, Any]:
        return self._owned(
            await self._anchor(tenant, name),
            f"kubernetes: the anchor ConfigMap of {name!r} is gone (the next run recreates it)",
            f"kubernetes: ConfigMap {name!r} in {tenant.local_id} is not ours",
        )

    async def _change_member(self, tenant: TenantRef, name: str, user: str, add: bool) -> None:
        anchor = await self._owned_anchor(tenant, name)
        members = self._members(anchor)
        wanted = sorted({*members, user}) if add else sorted(m for m in members if m != user)
        if wanted != sorted(members):
            anchor = {**anchor, "data": {**(anchor.get("data") or {}), "members": json.dumps(wanted)}}
            await self._request(
                "PUT configmaps",
                "PUT",
                f"{self._anchors_path(tenant)}/{name}",
                anchor,
                self._write_query(),
            )
        for b in await self._list_bindings(tenant, f"{MANAGED_BY_LABEL}={MANAGED_BY}"):
            if group_of(b) != name:
                continue
            subjects = [dict(s) for s in b.get("subjects") or []]
            if add:
                for s in self._subjects(name, [user]):
                    if subject_keys([s]) - subject_keys(subjects):
                        subjects.append(s)
            else:
                subjects = [s for s in subjects if not (s.get("kind") == "User" and s.get("name") == user)]
            await self._put_subjects(tenant, b, subjects)

    async def _grant(self, tenant: TenantRef, name: str, group_id: str, role: str) -> None:
        anchor = await self._owned_anchor(tenant, name)
        subjects = self._subjects(name, self._members(anchor))
        bindings = await self._list_bindings(tenant, None)
        for b in bindings:
            if binds(b, name, role):
                # Repair: add what is missing, keep extra users (removing them is remove_member's job,
                # which the deletion guard counts).
                current = [dict(s) for s in b.get("subjects") or []]
                missing = [s for s in subjects if subject_keys([s]) - subject_keys(current)]
                await self._put_subjects(tenant, b, current + missing)
                return
        taken = {str(meta(b).get("name")) for b in bindings}
        await self._create_binding(tenant, name, role, subjects, taken)

    async def _delete_group(self, tenant: TenantRef, name: str, group_id: str | None) -> None:
        await self._delete_object(
            tenant,
            name,
            group_id,
            await self._anchor(tenant, name),
            "configmaps",
            f"{self._anchors_path(tenant)}/{name}",
            f"kubernetes: ConfigMap {name!r} in {tenant.local_id} is not ours",
        )
