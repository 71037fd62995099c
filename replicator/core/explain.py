"""explain: why a user has (or lacks) each membership on a tenant, as a chain from binding to
platform change, or why it is missing. Pure: works on the compiled, planned and observed data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from platforms.contract import Action, Capabilities, ObservedTenant
from replicator.core.compile import effective_role_mappings, pattern_values, tenant_tags
from replicator.core.config import Config
from replicator.core.euid import transform_euid
from replicator.core.inventory import Inventory, MeshTenant, MeshUser, UserSubject, binding_label
from replicator.core.model import WarningCode
from replicator.core.plan import Plan
from replicator.core.templating import Token, parse_pattern, render, tag_key


def find_user(inventory: Inventory, wanted: str) -> MeshUser | None:
    """A meshUser by name, or else by username, email or euid (case-insensitively)."""
    if wanted in inventory.users:
        return inventory.users[wanted]
    w = wanted.casefold()
    for u in inventory.users.values():
        if any(v and v.casefold() == w for v in (u.spec.username, u.spec.email, u.spec.euid)):
            return u
    return None


def explain_user(
    config: Config,
    inventory: Inventory,
    tenant: MeshTenant,
    caps: Capabilities,
    plan: Plan,
    observed: ObservedTenant,
    user: MeshUser,
    now: datetime,
) -> dict[str, Any]:
    """Every binding of the user on the tenant's project, each followed to the platform."""
    meta = tenant.metadata
    platform = config.platform(meta.platform_identifier)
    assert platform is not None
    tags = tenant_tags(config, inventory, tenant)
    zone = config.landing_zone(tenant.spec.landing_zone_identifier)
    mappings = effective_role_mappings(config, tenant)
    name = user.metadata.name
    euid = user.spec.euid
    platform_euid = transform_euid(platform.euid_pattern, euid) if euid else None
    matches = plan.resolved.get(platform_euid, ()) if platform_euid else ()
    warnings = [
        {"code": w.code.value, "message": w.message}
        for w in plan.warnings
        if w.user == name or w.subject == name
    ]
    chains: list[dict[str, Any]] = []
    bindings = inventory.bindings_by_project.get((meta.owned_by_workspace, meta.owned_by_project), ())
    for index, b in enumerate(bindings):
        via = _how_bound(inventory, b.spec.subjects, name)
        if via is None:
            continue
        role = b.spec.role
        chain: dict[str, Any] = {"binding": binding_label(b, index), "via": via, "role": role}
        if b.spec.expires_at is not None and b.spec.expires_at <= now:
            chain["outcome"] = (
                f"{WarningCode.BINDING_EXPIRED.value}: expired at {b.spec.expires_at.isoformat()}"
            )
            chains.append(chain)
            continue
        mapping = mappings.get(role)
        if mapping is None:
            chain["outcome"] = (
                f"{WarningCode.UNMAPPED_ROLE.value}: landing zone "
                f"{tenant.spec.landing_zone_identifier} maps no role {role!r}"
            )
            chains.append(chain)
            continue
        source = (
            f"landing zone {zone.identifier}"
            if zone and role in zone.role_mappings
            else f"platform default {platform.identifier}"
        )
        values = pattern_values(tenant, mapping.platform_group_alias)
        group = caps.group_name_prefix + render(platform.user_group_name_pattern, values, tags)
        chain.update(
            mapping=f"{source}: {role} -> alias {mapping.platform_group_alias}, "
            f"roles {', '.join(mapping.platform_roles) or '-'}",
            alias=mapping.platform_group_alias,
            pattern=platform.user_group_name_pattern,
            values=_used_values(platform.user_group_name_pattern, values, tags),
            group=group,
            euid=euid,
            platformEuid=platform_euid,
            lookupAttribute=caps.lookup_attribute,
        )
        if not euid:
            chain["outcome"] = (
                f"{WarningCode.USER_HAS_NO_EUID.value}: not replicated to {platform.identifier}"
            )
        elif not matches:
            chain["outcome"] = (
                f"{WarningCode.USER_NOT_FOUND.value}: "
                f"no platform user with {caps.lookup_attribute} {platform_euid!r}"
            )
        elif len(matches) > 1:
            chain["outcome"] = f"{WarningCode.AMBIGUOUS_MATCH.value}: {len(matches)} platform users match"
        else:
            pu = matches[0]
            chain["platformUser"] = {"id": pu.id, "name": pu.name}
            current = next((g for g in observed.groups if g.alias == mapping.platform_group_alias), None)
            member_now = current is not None and any(m.id == pu.id for m in current.members)
            planned = [
                c
                for c in (*plan.changes, *plan.withheld)
                if c.group == group and c.user is not None and c.user.id == pu.id
            ]
            chain["current"] = (
                f"member of {current.name}"
                if member_now and current
                else "group does not exist yet"
                if group in {c.group for c in plan.changes if c.action is Action.CREATE_GROUP}
                else "not a member"
            )
            chain["outcome"] = (
                "; ".join(f"planned: {c.action.value} {c.group}" for c in planned)
                if planned
                else "in sync: nothing to do"
            )
        chains.append(chain)
    return {
        "tenant": tenant.key,
        "user": name,
        "euid": euid,
        "platformEuid": platform_euid,
        "chains": chains,
        "removals": _removals(plan, _platform_ids(matches, observed, platform_euid)),
        "warnings": warnings,
    }


def _platform_ids(matches: Any, observed: ObservedTenant, platform_euid: str | None) -> set[str]:
    """The platform user ids of the explained user: the one its lookup found, else (no binding
    is left, so nothing looked it up) the members of the owned groups named by its platform euid."""
    if len(matches) == 1:
        return {matches[0].id}
    if len(matches) > 1 or not platform_euid:
        return set()
    wanted = platform_euid.casefold()
    return {m.id for g in observed.groups for m in g.members if m.name and m.name.casefold() == wanted}


def _removals(plan: Plan, user_ids: set[str]) -> list[dict[str, Any]]:
    """What the plan takes from the platform users ``user_ids`` (access no binding grants any
    more), the removals the deletion guard withholds included."""
    return [
        {"action": c.action.value, "group": c.group, "withheld": withheld}
        for changes, withheld in ((plan.changes, False), (plan.withheld, True))
        for c in changes
        if c.user is not None and c.user.id in user_ids and not c.action.adds
    ]


def _used_values(pattern: str, values: dict[str, str], tags: dict[str, str]) -> dict[str, str]:
    """The placeholders a pattern uses, with the values they had."""
    used: dict[str, str] = {}
    for part in parse_pattern(pattern):
        if not isinstance(part, Token):
            continue
        if part.name == "customerIdentifier":
            used[part.name] = values["workspaceIdentifier"]
        elif part.name in values:
            used[part.name] = values[part.name]
        else:
            key = tag_key(part.name, tags)
            used[part.name] = tags[key] if key else "?"
    return used


def explain_group(plan: Plan, observed: ObservedTenant, group: str) -> dict[str, Any] | None:
    """A desired group: its alias, roles, desired members and what the plan does to it."""
    desired = next((g for g in plan.tenant.groups if g.name == group), None)
    current = next((g for g in observed.groups if g.name == group), None)
    if desired is None and current is None:
        return None
    members = []
    for m in desired.members if desired else ():
        found = plan.resolved.get(m.platform_euid, ())
        members.append(
            {
                "user": m.user,
                "euid": m.euid,
                "platformEuid": m.platform_euid,
                "via": list(m.via),
                "platformUser": found[0].name if len(found) == 1 else None,
                "lookup": "found" if len(found) == 1 else "ambiguous" if found else "not found",
            }
        )
    changes = [c for c in (*plan.changes, *plan.withheld) if c.group == group]
    return {
        "tenant": plan.tenant.ref.key,
        "group": group,
        "alias": desired.alias if desired else current.alias if current else None,
        "projectRole": desired.project_role if desired else None,
        "roles": sorted(desired.roles) if desired else [],
        "exists": current is not None,
        "currentMembers": sorted(u.name for u in current.members) if current else [],
        "currentRoles": sorted(current.roles) if current else [],
        "members": members,
        "planned": [f"{c.action.value} {c.subject}".strip() for c in changes],
    }


def group_text(doc: dict[str, Any]) -> str:
    lines = [
        f"{doc['group']} on {doc['tenant']}: alias {doc['alias']}, project role {doc['projectRole'] or '-'}, "
        f"roles {', '.join(doc['roles']) or '-'}",
        f"  on the platform: {'exists' if doc['exists'] else 'does not exist'}; members "
        f"{', '.join(doc['currentMembers']) or '-'}; roles {', '.join(doc['currentRoles']) or '-'}",
    ]
    for m in doc["members"]:
        lines.append(
            f"  {m['user']}: euid {m['euid']} -> {m['platformEuid']}: {m['lookup']}"
            + (f" ({m['platformUser']})" if m["platformUser"] else "")
            + f"  via {', '.join(m['via'])}"
        )
    lines += [f"  planned: {p}" for p in doc["planned"]] or ["  planned: nothing"]
    return "\n".join(lines) + "\n"


def _how_bound(inventory: Inventory, subjects: Any, user: str) -> str | None:
    for s in subjects:
        if isinstance(s, UserSubject):
            if s.user == user:
                return "direct"
        else:
            group = inventory.groups.get(s.group)
            if group is not None and user in group.spec.members:
                return f"user group {s.group}"
    return None


def explain_text(doc: dict[str, Any]) -> str:
    lines = [f"{doc['user']} on {doc['tenant']} (euid {doc['euid'] or '-'} -> {doc['platformEuid'] or '-'})"]
    if not doc["chains"]:
        lines.append("  no binding gives this user a role on this project")
    for c in doc["chains"]:
        lines.append(f"  {c['binding']} ({c['via']}), role {c['role']}")
        if "mapping" in c:
            lines.append(f"    mapping:  {c['mapping']}")
            shown = ", ".join(f"{k}={v}" for k, v in c["values"].items())
            lines.append(f"    group:    {c['group']}  (pattern {c['pattern']}; {shown})")
            lines.append(f"    lookup:   {c['lookupAttribute']} = {c['platformEuid'] or '-'}")
        if "platformUser" in c:
            lines.append(
                f"    user:     {c['platformUser']['name']} (id {c['platformUser']['id']}); {c['current']}"
            )
        lines.append(f"    -> {c['outcome']}")
    if doc["removals"]:
        lines.append("  pending removals (access no binding grants any more):")
    for r in doc["removals"]:
        why = (
            "  [withheld by the deletion guard: reconcile --allow-deletions confirms it]"
            if r["withheld"]
            else ""
        )
        lines.append(f"    - {r['action']} {r['group']}{why}")
    for w in doc["warnings"]:
        lines.append(f"  ! {w['code']}: {w['message']}")
    return "\n".join(lines) + "\n"
