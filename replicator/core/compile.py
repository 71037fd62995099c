"""compile: the desired state of every tenant from the inventory and the config. Pure: no I/O, no
clock (``now`` is passed in)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from operator import attrgetter

from platforms.contract import Capabilities, TenantRef
from replicator.core.config import Config, PlatformConfig, RoleMapping
from replicator.core.euid import transform_euid
from replicator.core.inventory import Inventory, MeshProjectBinding, MeshTenant, UserSubject, binding_label
from replicator.core.model import DesiredGroup, DesiredMember, DesiredTenant, ReplicationWarning, WarningCode
from replicator.core.templating import render

_MEMBER_ORDER = attrgetter("platform_euid", "user")
"""The order of a group's members: that of :class:`DesiredMember` (a user is in a group once, so
the two fields decide), compared in C rather than by the dataclass's ``__lt__``."""


def effective_role_mappings(config: Config, tenant: MeshTenant) -> dict[str, RoleMapping]:
    """The platform's default mappings, overridden role by role by the landing zone's."""
    platform = config.platform(tenant.metadata.platform_identifier)
    zone = config.landing_zone(tenant.spec.landing_zone_identifier)
    mappings = dict(platform.role_mappings) if platform else {}
    if zone:
        mappings.update(zone.role_mappings)
    return mappings


def pattern_values(tenant: MeshTenant, alias: str) -> dict[str, str]:
    m = tenant.metadata
    return {
        "workspaceIdentifier": m.owned_by_workspace,
        "projectIdentifier": m.owned_by_project,
        "platformGroupAlias": alias,
        "platform": m.platform_identifier,
        "tenantLocalId": tenant.spec.local_id,
    }


def tenant_tags(config: Config, inventory: Inventory, tenant: MeshTenant) -> dict[str, str]:
    """The tags ``#{tag<Name>}`` reads for a tenant: its workspace's, its landing zone's, its own
    and its project's, the more specific winning a name they share (project, tenant, landing zone,
    workspace)."""
    meta = tenant.metadata
    workspace = inventory.workspaces.get(meta.owned_by_workspace)
    zone = config.landing_zone(tenant.spec.landing_zone_identifier)
    project = inventory.projects.get((meta.owned_by_workspace, meta.owned_by_project))
    return {
        **(workspace.spec.tags if workspace else {}),
        **(zone.tags if zone else {}),
        **tenant.spec.tags,
        **(project.spec.tags if project else {}),
    }


def group_name(
    platform: PlatformConfig, caps: Capabilities, tenant: MeshTenant, alias: str, tags: dict[str, str]
) -> str:
    """The platform group name of one alias of one tenant (the driver's prefix included)."""
    return caps.group_name_prefix + render(
        platform.user_group_name_pattern, pattern_values(tenant, alias), tags
    )


def compile_tenant(
    config: Config,
    inventory: Inventory,
    tenant: MeshTenant,
    caps: Capabilities,
    now: datetime,
    euids: dict[tuple[str, str], str] | None = None,
) -> DesiredTenant:
    """Bindings (user groups expanded, expired ones dropped) x landing-zone role mapping x platform.
    ``euids``: the transformed euids of earlier tenants, (pattern, euid) -> platform euid, shared
    by :func:`compile_all` so that a user in many tenants has one string for it, not one each."""
    euids = {} if euids is None else euids
    meta = tenant.metadata
    platform = config.platform(meta.platform_identifier)
    if platform is None:  # validation refuses this; compile stays total
        raise ValueError(f"{tenant.key}: unknown platform {meta.platform_identifier!r}")
    ref = TenantRef(tenant.key, meta.platform_identifier, tenant.spec.local_id)
    tags = tenant_tags(config, inventory, tenant)
    mappings = effective_role_mappings(config, tenant)
    warnings: set[ReplicationWarning] = set()

    bindings = inventory.bindings_by_project.get((meta.owned_by_workspace, meta.owned_by_project), ())
    members: dict[str, dict[str, DesiredMember]] = defaultdict(dict)  # role -> user -> member
    for index, binding in enumerate(bindings):
        label = binding_label(binding, index)
        only: tuple[str, ...] = (label,)  # the via of every member of this binding alone: one tuple for all
        if binding.spec.expires_at is not None and binding.spec.expires_at <= now:
            warnings.add(
                ReplicationWarning(
                    WarningCode.BINDING_EXPIRED,
                    label,
                    f"{label} expired at {binding.spec.expires_at.isoformat()}: its access is removed",
                )
            )
            continue
        role = binding.spec.role
        if role not in mappings:
            warnings.add(
                ReplicationWarning(
                    WarningCode.UNMAPPED_ROLE,
                    role,
                    f"landing zone {tenant.spec.landing_zone_identifier!r} maps no platform role for "
                    f"project role {role!r}: its bindings are not replicated",
                )
            )
            continue
        for user_name in _binding_users(inventory, binding):
            user = inventory.users.get(user_name)
            if user is None:
                continue
            euid = user.spec.euid
            if not euid:
                warnings.add(
                    ReplicationWarning(
                        WarningCode.USER_HAS_NO_EUID,
                        user_name,
                        f"user {user_name} has no euid and cannot be replicated to "
                        f"{meta.platform_identifier}",
                        user=user_name,
                    )
                )
                continue
            previous = members[role].get(user_name)
            if previous is None:
                via = only
            elif label in previous.via:
                via = previous.via
            else:
                via = (*previous.via, label)
            key = (platform.euid_pattern, euid)
            platform_euid = euids.get(key)
            if platform_euid is None:
                platform_euid = euids[key] = transform_euid(platform.euid_pattern, euid)
            members[role][user_name] = DesiredMember(platform_euid, user_name, euid, via)

    groups: list[DesiredGroup] = []
    if not tenant.spec.deleted:
        for role, mapping in sorted(mappings.items()):
            alias = mapping.platform_group_alias
            groups.append(
                DesiredGroup(
                    alias=alias,
                    name=group_name(platform, caps, tenant, alias, tags),
                    roles=frozenset(mapping.platform_roles),
                    members=tuple(sorted(members[role].values(), key=_MEMBER_ORDER)),
                    project_role=role,
                )
            )
    return DesiredTenant(
        ref=ref,
        landing_zone=tenant.spec.landing_zone_identifier,
        groups=_merge_aliases(groups),
        warnings=tuple(sorted(warnings)),
        deleted=tenant.spec.deleted,
        keep_groups=platform.skip_group_cleanup,
        bindings=len(bindings),
        pattern_values={**pattern_values(tenant, "<alias>"), **{f"tag:{k}": v for k, v in tags.items()}},
    )


def _binding_users(inventory: Inventory, binding: MeshProjectBinding) -> list[str]:
    users: list[str] = []
    for subject in binding.spec.subjects:
        if isinstance(subject, UserSubject):
            users.append(subject.user)
        else:
            group = inventory.groups.get(subject.group)
            users.extend(group.spec.members if group else ())
    return users


def _merge_aliases(groups: list[DesiredGroup]) -> tuple[DesiredGroup, ...]:
    """Two project roles mapped to the same alias share one group: members and roles are united."""
    by_alias: dict[str, DesiredGroup] = {}
    for g in groups:
        prev = by_alias.get(g.alias)
        if prev is None:
            by_alias[g.alias] = g
            continue
        merged = {m.user: m for m in prev.members}
        for m in g.members:
            merged[m.user] = (
                m
                if m.user not in merged
                else DesiredMember(m.platform_euid, m.user, m.euid, merged[m.user].via + m.via)
            )
        by_alias[g.alias] = DesiredGroup(
            g.alias,
            prev.name,
            prev.roles | g.roles,
            tuple(sorted(merged.values(), key=_MEMBER_ORDER)),
            f"{prev.project_role},{g.project_role}",
        )
    return tuple(by_alias.values())


def compile_all(
    config: Config, inventory: Inventory, caps_by_platform: dict[str, Capabilities], now: datetime
) -> dict[str, DesiredTenant]:
    """Every tenant whose platform has a driver, by tenant key."""
    euids: dict[tuple[str, str], str] = {}
    return {
        key: compile_tenant(
            config, inventory, tenant, caps_by_platform[tenant.metadata.platform_identifier], now, euids
        )
        for key, tenant in sorted(inventory.tenants.items())
        if tenant.metadata.platform_identifier in caps_by_platform
    }
