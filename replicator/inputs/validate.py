"""Cross-reference validation: every problem of config and inventory at once, each with file,
line, object and field. Also builds the :class:`Inventory` the core works on."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from platforms.contract import PLATFORM_TYPES, Capabilities
from platforms.registry import driver_class
from replicator.core.compile import effective_role_mappings, group_name, tenant_tags
from replicator.core.config import Config, PlatformConfig
from replicator.core.euid import EuidPatternError, check_euid_pattern
from replicator.core.inventory import (
    Inventory,
    MeshProject,
    MeshProjectBinding,
    MeshTenant,
    MeshUser,
    MeshUserGroup,
    MeshWorkspace,
    UserSubject,
    fold,
)
from replicator.core.templating import PatternError, RenderError, check_group_pattern
from replicator.inputs.loader import (
    InputError,
    Loaded,
    LoadedObject,
    Problem,
    _validation_problems,
    field_path,
)
from replicator.memory import bulk


@dataclass(frozen=True)
class Validated:
    config: Config
    inventory: Inventory
    capabilities: dict[str, Capabilities]
    """Platform identifier -> its driver's capabilities."""


def validate(loaded: Loaded) -> Validated:
    """Check everything; raise InputError listing every problem, or return the usable input."""
    with bulk():
        return _validate(loaded)


def _validate(loaded: Loaded) -> Validated:
    problems = list(loaded.problems)
    caps = _check_platforms(loaded, problems)
    inventory = _build_inventory(loaded.objects, problems)
    _check_references(loaded, inventory, caps, problems)
    if problems:
        raise InputError(problems)
    return Validated(loaded.config, inventory, caps)


def _check_platforms(loaded: Loaded, problems: list[Problem]) -> dict[str, Capabilities]:
    config, src = loaded.config, loaded.config_source
    caps: dict[str, Capabilities] = {}
    seen: set[str] = set()

    def problem(path: list[str | int], obj: str, message: str) -> None:
        problems.append(Problem(src.file, src.line(path), obj, field_path(path[2:]) or None, message))

    for i, p in enumerate(config.platforms):
        base: list[str | int] = ["platforms", i]
        obj = f"platform {p.identifier}"
        if p.identifier in seen:
            problem([*base, "identifier"], obj, "duplicate platform identifier")
        seen.add(p.identifier)
        try:
            check_euid_pattern(p.euid_pattern)
        except EuidPatternError as e:
            problem([*base, "euidPattern"], obj, f"euidPattern {p.euid_pattern!r}: {e}")
        try:
            check_group_pattern(p.user_group_name_pattern)
        except PatternError as e:
            problem([*base, "userGroupNamePattern"], obj, f"{p.user_group_name_pattern!r}: {e}")
        for other in PLATFORM_TYPES:
            if other != p.type and other in (p.model_extra or {}):
                problem([*base, other], obj, f"a {p.type} platform takes an {p.type!r} block, not {other!r}")
        unknown = set(p.model_extra or {}) - set(PLATFORM_TYPES)
        for key in sorted(unknown):
            problem([*base, key], obj, "unknown field")
        driver = driver_class(p.type)
        if driver is None:
            problem([*base, "type"], obj, f"platform type {p.type!r} has no driver in this version")
            continue
        block = p.driver_block()
        if block is None:
            problem(base, obj, f"the {p.type!r} block with the driver's settings is missing")
            continue
        try:
            # The context lets a driver block default to a global setting (Azure's lookup strategy).
            context = {"replication": config.replication}
            p._options = driver.options_model.model_validate(block, context=context)
        except ValidationError as e:
            for pr in _validation_problems(e, src.file, lambda _: None, obj):
                path = [*base, p.type, *(pr.field or "").split(".")]
                problem(path, obj, pr.message)
            continue
        caps[p.identifier] = platform_caps = driver.capabilities_for(p._options)
        if p.deprovision_created_users.enabled and not platform_caps.ensures_users:
            problem(
                [*base, "deprovisionCreatedUsers", "enabled"],
                obj,
                "this platform creates no users (OpenStack with federatedIdp, Azure with "
                "b2bGuestInvitation do): there is nothing to deprovision",
            )
        for role, mapping in p.role_mappings.items():
            for j, r in enumerate(mapping.platform_roles):
                why = platform_caps.check_role(r)
                if why:
                    problem([*base, "roleMappings", role, "platformRoles", j], obj, why)

    for i, sp in enumerate(config.identity.saml):
        metadata = loaded.config_path.parent / sp.idp_metadata
        if not metadata.is_file():
            where: list[str | int] = ["identity", "saml", i, "idpMetadata"]
            problems.append(
                Problem(src.file, src.line(where), f"saml provider {sp.name}", "idpMetadata",
                        f"no IdP metadata file {metadata}")
            )  # fmt: skip

    zones: set[str] = set()
    for i, z in enumerate(config.landing_zones):
        obj = f"landing zone {z.identifier}"
        if z.identifier in zones:
            problem(["landingZones", i, "identifier"], obj, "duplicate landing zone identifier")
        zones.add(z.identifier)
        if config.platform(z.platform) is None:
            problem(["landingZones", i, "platform"], obj, f"unknown platform {z.platform!r}")
        elif z.platform in caps:
            for role, mapping in z.role_mappings.items():
                for j, r in enumerate(mapping.platform_roles):
                    why = caps[z.platform].check_role(r)
                    if why:
                        problem(["landingZones", i, "roleMappings", role, "platformRoles", j], obj, why)
    return caps


def _build_inventory(objects: list[LoadedObject], problems: list[Problem]) -> Inventory:
    users: dict[str, MeshUser] = {}
    groups: dict[str, MeshUserGroup] = {}
    workspaces: dict[str, MeshWorkspace] = {}
    projects: dict[tuple[str, str], MeshProject] = {}
    tenants: dict[str, MeshTenant] = {}
    bindings: list[MeshProjectBinding] = []
    first_seen: dict[tuple[str, Any], LoadedObject] = {}

    for lo in objects:
        o = lo.obj
        key: Any
        table: dict[Any, Any] | None
        if isinstance(o, MeshUser):
            key, table = o.metadata.name, users
        elif isinstance(o, MeshUserGroup):
            key, table = o.metadata.name, groups
        elif isinstance(o, MeshWorkspace):
            key, table = o.metadata.name, workspaces
        elif isinstance(o, MeshProject):
            key, table = (o.metadata.owned_by_workspace, o.metadata.name), projects
        elif isinstance(o, MeshTenant):
            key, table = o.key, tenants
        else:
            key, table = _binding_key(o), None
        previous = first_seen.get((o.kind, key))
        if previous is not None:
            problems.append(
                Problem(
                    lo.source.file,
                    lo.source.line(["metadata"]),
                    lo.label,
                    "metadata",
                    f"duplicate {o.kind}: already defined at {previous.source.file}:{previous.source.line()}",
                )
            )
            continue
        first_seen[(o.kind, key)] = lo
        if table is None:
            bindings.append(o)
        else:
            table[key] = o
    return Inventory(
        users=users,
        groups=groups,
        workspaces=workspaces,
        projects=projects,
        bindings=tuple(bindings),
        tenants=tenants,
    )


def _binding_key(b: MeshProjectBinding) -> Any:
    """What makes two bindings one: a named binding its workspace, project and name; an unnamed
    one everything it says (the same role for the same subjects twice is a copy, not a second
    grant)."""
    m = b.metadata
    if m.name:
        return (m.owned_by_workspace, m.owned_by_project, m.name)
    return (m.owned_by_workspace, m.owned_by_project, None, b.spec)  # frozen: hashable by value


def _check_references(
    loaded: Loaded, inv: Inventory, caps: dict[str, Capabilities], problems: list[Problem]
) -> None:
    config = loaded.config
    euids: dict[str, LoadedObject] = {}
    rendered: dict[tuple[str, str], str] = {}  # (platform, group name) -> tenant key
    for lo in loaded.objects:
        o = lo.obj

        def problem(path: list[str | int], message: str, lo: LoadedObject = lo) -> None:
            problems.append(
                Problem(lo.source.file, lo.source.line(path), lo.label, field_path(path) or None, message)
            )

        if isinstance(o, MeshUser) and o.spec.euid and inv.users.get(o.metadata.name) is o:
            # (a second user of one name is reported as a duplicate, not as its own euid twin)
            other = euids.get(fold(o.spec.euid))
            if other is not None and other.obj is not o:
                problems.append(euid_problem(lo, other))
            euids.setdefault(fold(o.spec.euid), lo)
        elif isinstance(o, MeshUserGroup):
            problems.extend(member_problems(lo, inv.users, loaded.deprovisioned_users))
        elif isinstance(o, MeshProject):
            if o.metadata.owned_by_workspace not in inv.workspaces:
                problem(
                    ["metadata", "ownedByWorkspace"],
                    f"unknown meshWorkspace {o.metadata.owned_by_workspace!r}",
                )
        elif isinstance(o, MeshProjectBinding):
            m = o.metadata
            if (m.owned_by_workspace, m.owned_by_project) not in inv.projects:
                problem(
                    ["metadata", "ownedByProject"],
                    f"unknown meshProject {m.owned_by_workspace}/{m.owned_by_project}",
                )
            for i, s in enumerate(o.spec.subjects):
                if isinstance(s, UserSubject):
                    if s.user not in inv.users and s.user not in loaded.deprovisioned_users:
                        problem(["spec", "subjects", i, "user"], f"unknown meshUser {s.user!r}")
                elif s.group not in inv.groups:
                    problem(["spec", "subjects", i, "group"], f"unknown meshUserGroup {s.group!r}")
        elif isinstance(o, MeshTenant):
            _check_tenant(config, inv, o, caps, rendered, problem)


def euid_problem(lo: LoadedObject, other: LoadedObject) -> Problem:
    """The user ``lo`` has the euid of ``other`` (compared folded, see :func:`fold`)."""
    euid = lo.obj.spec.euid
    return Problem(
        lo.source.file,
        lo.source.line(["spec", "euid"]),
        lo.label,
        "spec.euid",
        f"euid {euid!r} is also the euid of {other.label}: euids must be unique",
    )


def member_problems(
    lo: LoadedObject, users: Collection[str], deprovisioned: Collection[str]
) -> list[Problem]:
    """The members of the user group ``lo`` that are no user (among ``users`` or the users an
    identity source ``deprovisioned``)."""
    return [
        Problem(
            lo.source.file,
            lo.source.line(["spec", "members", i]),
            lo.label,
            f"spec.members[{i}]",
            f"unknown meshUser {member!r}",
        )
        for i, member in enumerate(lo.obj.spec.members)
        if member not in users and member not in deprovisioned
    ]


def _check_tenant(
    config: Config,
    inv: Inventory,
    tenant: MeshTenant,
    caps: dict[str, Capabilities],
    rendered: dict[tuple[str, str], str],
    problem: Any,
) -> None:
    m = tenant.metadata
    if (m.owned_by_workspace, m.owned_by_project) not in inv.projects:
        problem(
            ["metadata", "ownedByProject"], f"unknown meshProject {m.owned_by_workspace}/{m.owned_by_project}"
        )
    platform: PlatformConfig | None = config.platform(m.platform_identifier)
    if platform is None:
        problem(["metadata", "platformIdentifier"], f"unknown platform {m.platform_identifier!r}")
    zone = config.landing_zone(tenant.spec.landing_zone_identifier)
    if zone is None:
        problem(
            ["spec", "landingZoneIdentifier"], f"unknown landing zone {tenant.spec.landing_zone_identifier!r}"
        )
    elif zone.platform != m.platform_identifier:
        problem(
            ["spec", "landingZoneIdentifier"],
            f"landing zone {zone.identifier!r} belongs to platform {zone.platform!r}, "
            f"not {m.platform_identifier!r}",
        )
    if platform is None or m.platform_identifier not in caps or zone is None:
        return
    cap = caps[m.platform_identifier]
    tags = tenant_tags(config, inv, tenant)
    aliases: dict[str, list[str]] = defaultdict(list)
    for role, mapping in effective_role_mappings(config, tenant).items():
        aliases[mapping.platform_group_alias].append(role)
    for alias in sorted(aliases):
        try:
            name = group_name(platform, cap, tenant, alias, tags)
        except PatternError:
            return  # the pattern itself is wrong: reported once, at the platform, not per tenant
        except RenderError as e:  # this tenant's data does not fit it (a tag its project lacks)
            problem(["spec"], f"userGroupNamePattern of {platform.identifier}: {e}")
            return
        why = cap.check_group_name(name)
        if why:
            problem(["spec"], f"userGroupNamePattern of {platform.identifier} {why}")
        other = rendered.get((platform.identifier, name.casefold()))
        if other is not None and other != tenant.key:
            problem(
                ["spec"],
                f"group name {name!r} is also rendered for tenant {other}: "
                "the pattern must tell tenants apart",
            )
        rendered[(platform.identifier, name.casefold())] = tenant.key


def raise_if(problems: list[Problem]) -> None:
    if problems:
        raise InputError(problems)
