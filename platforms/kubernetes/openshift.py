"""The OpenShift driver: a cluster-scoped ``user.openshift.io/v1`` Group per group, RoleBindings of
the Group in the project (see :mod:`platforms.kubernetes.driver` for the whole model)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from platforms.contract import ObservedGroup, ObservedTenant, PlatformUser
from platforms.kubernetes.base import RbacDriver
from platforms.kubernetes.driver import KubernetesDriver
from platforms.kubernetes.objects import (
    GROUPS_PATH,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    TENANT_LABEL,
    USERS_PATH,
    binds,
    group_subject,
    is_ours_as,
    meta,
    names_group,
    role_id,
    tenant_hash,
)

if TYPE_CHECKING:
    from platforms.contract import OwnedGroup, TenantRef


class OpenShiftDriver(RbacDriver):
    """OpenShift: ``user.openshift.io/v1`` Groups plus RoleBindings of the Group in the project."""

    platform_name: ClassVar[str] = "openshift"
    capabilities = dataclasses.replace(KubernetesDriver.capabilities, external_grants_default="keep")
    strips_foreign_bindings: ClassVar[bool] = True
    ensure_user_refusal = "not supported"

    LOOKUP_GETS: ClassVar[int] = 20
    """Up to this many names are looked up one GET each; more, by listing every User (paged)."""
    LOOKUP_PAGE: ClassVar[int] = 500

    async def lookup_users(self, euids: Sequence[str]) -> dict[str, tuple[PlatformUser, ...]]:
        """Every name is a user a Group may list, but OpenShift creates the User object only at the
        first login ("Upon log in, every user of the system receives a User and Identity resource",
        OKD's User and group APIs, user.openshift.io/v1 User). A name without one is returned
        ``awaiting_login``: the membership is written and the plan warns, so that a wrong euid
        pattern shows instead of a group that silently never works."""
        known = await self._user_names(euids)
        return {e: (PlatformUser(e, e, awaiting_login=e not in known),) for e in euids}

    async def _user_names(self, euids: Sequence[str]) -> set[str]:
        if len(euids) <= self.LOOKUP_GETS:
            found = [await self._get("users", f"{USERS_PATH}/{quote(e, safe='')}") for e in euids]
            return {e for e, user in zip(euids, found, strict=True) if user is not None}
        names: set[str] = set()
        token = ""
        while True:
            query = [("limit", str(self.LOOKUP_PAGE)), *([("continue", token)] if token else [])]
            doc = await self._request("LIST users", "GET", USERS_PATH, query=query) or {}
            names |= {str(meta(u)["name"]) for u in doc.get("items") or []}
            token = str((doc.get("metadata") or {}).get("continue") or "")
            if not token:
                return names & set(euids)

    async def _group(self, name: str) -> dict[str, Any] | None:
        group: dict[str, Any] | None = await self._get("groups", f"{GROUPS_PATH}/{name}")
        return group

    @staticmethod
    def _observe_group(
        group: Mapping[str, Any], alias: str, bindings: Sequence[Mapping[str, Any]]
    ) -> ObservedGroup:
        name = str(meta(group)["name"])
        roles = {role_id(b) for b in bindings if names_group(b, name)}
        return RbacDriver._observed(group, alias, [str(u) for u in group.get("users") or []], roles)

    async def observe(
        self, tenant: TenantRef, owned: Sequence[OwnedGroup], desired_names: Mapping[str, str]
    ) -> ObservedTenant:
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY},{TENANT_LABEL}={tenant_hash(tenant)}"
        doc = await self._request("LIST groups", "GET", GROUPS_PATH, query=[("labelSelector", selector)])
        mine = {str(meta(g)["name"]): g for g in (doc or {}).get("items") or []}
        bindings = await self._list_bindings(tenant, None)
        groups: list[ObservedGroup] = []
        vanished: list[str] = []
        foreign: dict[str, str] = {}
        names = [(r.name, r.alias, r.platform_id is not None) for r in owned]
        checked = {r.name for r in owned}
        for alias, name in desired_names.items():
            if name not in checked:
                checked.add(name)
                names.append((name, alias, False))
        for name, alias, confirmed in names:
            group = mine.get(name)
            if group is None:
                group = await self._group(name)
                if group is None:
                    if confirmed or any(r.name == name for r in owned):
                        vanished.append(name)
                    continue
            if is_ours_as(group, tenant, recorded=confirmed):
                groups.append(self._observe_group(group, alias, bindings))
            else:
                foreign[name] = str(meta(group).get("uid", ""))
        return ObservedTenant(groups=tuple(groups), vanished=tuple(vanished), foreign=foreign)

    async def _create_group(self, tenant: TenantRef, name: str) -> str:
        return await self._create_object(
            tenant,
            name,
            ("user.openshift.io/v1", "Group"),
            GROUPS_PATH,
            {"users": []},
            lambda: self._group(name),
            f"openshift: conflict creating group {name!r}, but it does not exist",
            f"openshift: a group {name!r} already exists and is not ours",
        )

    async def _owned_group(self, name: str) -> dict[str, Any]:
        return self._owned(
            await self._group(name),
            f"openshift: group {name!r} is gone (the next run recreates it)",
            f"openshift: group {name!r} is not ours",
        )

    async def _change_member(self, tenant: TenantRef, name: str, user: str, add: bool) -> None:
        group = await self._owned_group(name)
        users = [str(u) for u in group.get("users") or []]
        if (user in users) == add:
            return
        wanted = [*users, user] if add else [u for u in users if u != user]
        await self._request(
            "PUT groups", "PUT", f"{GROUPS_PATH}/{name}", {**group, "users": wanted}, self._write_query()
        )

    async def _grant(self, tenant: TenantRef, name: str, group_id: str, role: str) -> None:
        await self._owned_group(name)
        bindings = await self._list_bindings(tenant, None)
        if any(role_id(b) == role and names_group(b, name) for b in bindings):
            return
        for b in bindings:
            if binds(b, name, role):
                await self._put_subjects(tenant, b, [group_subject(name)])
                return
        taken = {str(meta(b).get("name")) for b in bindings}
        await self._create_binding(tenant, name, role, [group_subject(name)], taken)

    async def _delete_group(self, tenant: TenantRef, name: str, group_id: str | None) -> None:
        await self._delete_object(
            tenant,
            name,
            group_id,
            await self._group(name),
            "groups",
            f"{GROUPS_PATH}/{name}",
            f"openshift: group {name!r} is not ours",
        )
