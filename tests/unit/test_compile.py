"""compile: desired groups per tenant (bindings x landing-zone role mappings x platform)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

import replicator.core.compile as compile_module
from platforms.contract import Capabilities, TenantRef
from replicator.core.compile import compile_all, compile_tenant, effective_role_mappings, group_name
from replicator.core.config import Config
from replicator.core.inventory import (
    Inventory,
    MeshProject,
    MeshProjectBinding,
    MeshTenant,
    MeshUser,
    MeshUserGroup,
)
from replicator.core.model import DesiredGroup, DesiredMember, ReplicationWarning

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PLATFORM = "aws.eu-central-1"
CAPS = Capabilities(external_grants_default="keep", lookup_attribute="userName", group_name_prefix="mst-")
PLAIN_CAPS = Capabilities(external_grants_default="keep", lookup_attribute="userName")

ROLE_ARN = "arn:aws:sso:::permissionSet/ssoins-1/ps-"


def make_config(
    *,
    euid_pattern: str = "%s",
    pattern: str | None = None,
    platform_mappings: dict[str, Any] | None = None,
    zone_mappings: dict[str, Any] | None = None,
) -> Config:
    platform: dict[str, Any] = {"identifier": PLATFORM, "type": "aws", "euidPattern": euid_pattern}
    if pattern is not None:
        platform["userGroupNamePattern"] = pattern
    if platform_mappings is not None:
        platform["roleMappings"] = platform_mappings
    if zone_mappings is None:
        zone_mappings = {
            "admin": {"platformGroupAlias": "admin", "platformRoles": [ROLE_ARN + "admin"]},
            "user": {"platformGroupAlias": "user", "platformRoles": [ROLE_ARN + "power"]},
        }
    return Config.model_validate(
        {
            "platforms": [platform],
            "landingZones": [
                {"identifier": "aws-default", "platform": PLATFORM, "roleMappings": zone_mappings}
            ],
        }
    )


def user(name: str, euid: str | None = None) -> MeshUser:
    spec: dict[str, Any] = {} if euid is None else {"euid": euid}
    return MeshUser.model_validate({"kind": "meshUser", "metadata": {"name": name}, "spec": spec})


def ugroup(name: str, *members: str) -> MeshUserGroup:
    return MeshUserGroup.model_validate(
        {"kind": "meshUserGroup", "metadata": {"name": name}, "spec": {"members": list(members)}}
    )


def binding(
    role: str,
    *subjects: dict[str, str],
    name: str | None = None,
    ws: str = "finance",
    project: str = "ledger",
    expires_at: datetime | None = None,
) -> MeshProjectBinding:
    meta: dict[str, Any] = {"ownedByWorkspace": ws, "ownedByProject": project}
    if name is not None:
        meta["name"] = name
    spec: dict[str, Any] = {"role": role, "subjects": list(subjects)}
    if expires_at is not None:
        spec["expiresAt"] = expires_at
    return MeshProjectBinding.model_validate({"kind": "meshProjectBinding", "metadata": meta, "spec": spec})


def project(ws: str = "finance", name: str = "ledger", tags: dict[str, Any] | None = None) -> MeshProject:
    return MeshProject.model_validate(
        {
            "kind": "meshProject",
            "metadata": {"name": name, "ownedByWorkspace": ws},
            "spec": {"tags": tags or {}},
        }
    )


def tenant(
    ws: str = "finance",
    project_name: str = "ledger",
    *,
    platform: str = PLATFORM,
    deleted: bool = False,
    local_id: str = "123456789012",
) -> MeshTenant:
    return MeshTenant.model_validate(
        {
            "kind": "meshTenant",
            "metadata": {
                "ownedByWorkspace": ws,
                "ownedByProject": project_name,
                "platformIdentifier": platform,
            },
            "spec": {"localId": local_id, "landingZoneIdentifier": "aws-default", "deleted": deleted},
        }
    )


def inventory(
    users: Sequence[MeshUser] = (),
    bindings: Sequence[MeshProjectBinding] = (),
    groups: Sequence[MeshUserGroup] = (),
    projects: Sequence[MeshProject] | None = None,
    tenants: Sequence[MeshTenant] = (),
) -> Inventory:
    projects = [project()] if projects is None else projects
    return Inventory(
        users={u.metadata.name: u for u in users},
        groups={g.metadata.name: g for g in groups},
        projects={(p.metadata.owned_by_workspace, p.metadata.name): p for p in projects},
        bindings=tuple(bindings),
        tenants={t.key: t for t in tenants},
    )


def label(role: str, index: int, name: str | None = None) -> str:
    return f"meshProjectBinding finance/ledger {name or f'#{index}'} ({role})"


def by_alias(groups: tuple[DesiredGroup, ...]) -> dict[str, DesiredGroup]:
    return {g.alias: g for g in groups}


def codes(warnings: tuple[ReplicationWarning, ...]) -> list[tuple[str, str]]:
    return [w.key for w in warnings]


# --- bindings -------------------------------------------------------------------------------------


def test_user_binding_becomes_a_member_of_the_role_group() -> None:
    inv = inventory([user("u1", "jdoe")], [binding("admin", {"user": "u1"})])
    desired = compile_tenant(make_config(), inv, tenant(), CAPS, NOW)
    assert desired.ref == TenantRef("finance/ledger/aws.eu-central-1", PLATFORM, "123456789012")
    assert desired.landing_zone == "aws-default"
    assert desired.deleted is False
    assert desired.bindings == 1
    assert desired.warnings == ()
    assert desired.groups == (
        DesiredGroup(
            alias="admin",
            name="mst-finance.ledger-admin",
            roles=frozenset({ROLE_ARN + "admin"}),
            members=(DesiredMember("jdoe", "u1", "jdoe", (label("admin", 0),)),),
            project_role="admin",
        ),
        DesiredGroup(
            alias="user",
            name="mst-finance.ledger-user",
            roles=frozenset({ROLE_ARN + "power"}),
            members=(),
            project_role="user",
        ),
    )
    assert desired.member_count == 1


def test_named_binding_is_labelled_by_its_name() -> None:
    inv = inventory([user("u1", "jdoe")], [binding("admin", {"user": "u1"}, name="ops")])
    desired = compile_tenant(make_config(), inv, tenant(), CAPS, NOW)
    assert by_alias(desired.groups)["admin"].members[0].via == (
        "meshProjectBinding finance/ledger ops (admin)",
    )


def test_group_binding_is_expanded_to_its_members() -> None:
    inv = inventory(
        [user("u1", "alice"), user("u2", "bob"), user("u3", "carol")],
        [binding("user", {"group": "devs"})],
        groups=[ugroup("devs", "u2", "u1")],
    )
    desired = compile_tenant(make_config(), inv, tenant(), CAPS, NOW)
    via = (label("user", 0),)
    assert by_alias(desired.groups)["user"].members == (
        DesiredMember("alice", "u1", "alice", via),
        DesiredMember("bob", "u2", "bob", via),
    )
    assert by_alias(desired.groups)["admin"].members == ()


def test_unknown_group_and_unknown_user_subjects_give_nobody() -> None:
    inv = inventory(
        [user("u1", "alice")], [binding("user", {"group": "nope"}, {"user": "ghost"}, {"user": "u1"})]
    )
    desired = compile_tenant(make_config(), inv, tenant(), CAPS, NOW)
    assert [m.user for m in by_alias(desired.groups)["user"].members] == ["u1"]


def test_user_in_two_bindings_of_one_role_appears_once_with_both_in_via() -> None:
    inv = inventory(
        [user("u1", "alice")],
        [binding("admin", {"user": "u1"}), binding("admin", {"group": "ops"})],
        groups=[ugroup("ops", "u1")],
    )
    desired = compile_tenant(make_config(), inv, tenant(), CAPS, NOW)
    assert by_alias(desired.groups)["admin"].members == (
        DesiredMember("alice", "u1", "alice", (label("admin", 0), label("admin", 1))),
    )


def test_user_reached_twice_through_one_binding_lists_that_binding_once() -> None:
    # directly and through a group, in the same binding: via names the binding once
    inv = inventory(
        [user("u1", "alice")],
        [binding("admin", {"user": "u1"}, {"group": "ops"})],
        groups=[ugroup("ops", "u1")],
    )
    desired = compile_tenant(make_config(), inv, tenant(), CAPS, NOW)
    assert by_alias(desired.groups)["admin"].members == (
        DesiredMember("alice", "u1", "alice", (label("admin", 0),)),
    )


def test_user_bound_in_two_roles_is_in_both_groups() -> None:
    inv = inventory(
        [user("u1", "alice")], [binding("admin", {"user": "u1"}), binding("user", {"user": "u1"})]
    )
    groups = by_alias(compile_tenant(make_config(), inv, tenant(), CAPS, NOW).groups)
    assert groups["admin"].members == (DesiredMember("alice", "u1", "alice", (label("admin", 0),)),)
    assert groups["user"].members == (DesiredMember("alice", "u1", "alice", (label("user", 1),)),)


def test_members_are_sorted_by_platform_euid() -> None:
    inv = inventory(
        [user("u1", "zed"), user("u2", "amy"), user("u3", "max")],
        [binding("admin", {"user": "u1"}, {"user": "u2"}, {"user": "u3"})],
    )
    groups = by_alias(compile_tenant(make_config(), inv, tenant(), CAPS, NOW).groups)
    assert [m.platform_euid for m in groups["admin"].members] == ["amy", "max", "zed"]


def test_bindings_of_other_projects_are_ignored() -> None:
    inv = inventory(
        [user("u1", "alice"), user("u2", "bob")],
        [
            binding("admin", {"user": "u1"}, ws="finance", project="other"),
            binding("admin", {"user": "u2"}, ws="hr", project="ledger"),
        ],
    )
    desired = compile_tenant(make_config(), inv, tenant(), CAPS, NOW)
    assert desired.member_count == 0
    assert desired.bindings == 0
    assert desired.warnings == ()


# --- expiry ---------------------------------------------------------------------------------------


def test_expired_binding_is_dropped_with_binding_expired() -> None:
    expired = NOW - timedelta(seconds=1)
    inv = inventory(
        [user("u1", "alice"), user("u2", "bob")],
        [binding("admin", {"user": "u1"}, expires_at=expired), binding("admin", {"user": "u2"})],
    )
    desired = compile_tenant(make_config(), inv, tenant(), CAPS, NOW)
    assert [m.user for m in by_alias(desired.groups)["admin"].members] == ["u2"]
    assert codes(desired.warnings) == [("BINDING_EXPIRED", label("admin", 0))]
    assert (
        desired.warnings[0].message
        == f"{label('admin', 0)} expired at {expired.isoformat()}: its access is removed"
    )
    assert desired.bindings == 2  # expired bindings still count as bindings of the project


def test_binding_expiring_exactly_now_counts_as_expired() -> None:
    inv = inventory([user("u1", "alice")], [binding("admin", {"user": "u1"}, expires_at=NOW)])
    desired = compile_tenant(make_config(), inv, tenant(), CAPS, NOW)
    assert desired.member_count == 0
    assert codes(desired.warnings) == [("BINDING_EXPIRED", label("admin", 0))]


def test_binding_expiring_in_the_future_is_kept() -> None:
    inv = inventory(
        [user("u1", "alice")], [binding("admin", {"user": "u1"}, expires_at=NOW + timedelta(microseconds=1))]
    )
    desired = compile_tenant(make_config(), inv, tenant(), CAPS, NOW)
    assert [m.user for m in by_alias(desired.groups)["admin"].members] == ["u1"]
    assert desired.warnings == ()


def test_expiry_is_compared_across_time_zones() -> None:
    later = datetime(2025, 6, 1, 15, 59, tzinfo=timezone(timedelta(hours=2)))  # 13:59Z, after NOW
    earlier = datetime(2025, 6, 1, 13, 59, tzinfo=timezone(timedelta(hours=2)))  # 11:59Z, before NOW
    inv = inventory(
        [user("u1", "alice"), user("u2", "bob")],
        [
            binding("admin", {"user": "u1"}, expires_at=later),
            binding("admin", {"user": "u2"}, expires_at=earlier),
        ],
    )
    desired = compile_tenant(make_config(), inv, tenant(), CAPS, NOW)
    assert [m.user for m in by_alias(desired.groups)["admin"].members] == ["u1"]
    assert codes(desired.warnings) == [("BINDING_EXPIRED", label("admin", 1))]


def test_now_is_only_passed_in() -> None:
    inv = inventory([user("u1", "alice")], [binding("admin", {"user": "u1"}, expires_at=NOW)])
    assert compile_tenant(make_config(), inv, tenant(), CAPS, NOW - timedelta(days=1)).member_count == 1
    assert compile_tenant(make_config(), inv, tenant(), CAPS, NOW).member_count == 0
    assert compile_tenant(make_config(), inv, tenant(), CAPS, NOW + timedelta(days=365)).member_count == 0
    # the module never reads a clock of its own
    source = inspect.getsource(compile_module)
    for call in (
        "datetime.now(",
        "datetime.utcnow(",
        "date.today(",
        "time.time(",
        "time.monotonic(",
        "import time",
    ):
        assert call not in source


# --- unmapped roles, euids ------------------------------------------------------------------------


def test_unmapped_role_warns_and_gives_nothing_else() -> None:
    inv = inventory(
        [user("u1", "alice"), user("u2")],
        [binding("auditor", {"user": "u1"}, {"user": "u2"}), binding("auditor", {"user": "u1"})],
    )
    desired = compile_tenant(make_config(), inv, tenant(), CAPS, NOW)
    assert codes(desired.warnings) == [("UNMAPPED_ROLE", "auditor")]
    assert "auditor" in desired.warnings[0].message
    assert "aws-default" in desired.warnings[0].message
    assert [g.alias for g in desired.groups] == ["admin", "user"]
    assert desired.member_count == 0


def test_user_without_euid_warns_once_per_tenant_even_if_bound_twice() -> None:
    inv = inventory(
        [user("u1"), user("u2", "bob")],
        [binding("admin", {"user": "u1"}, {"user": "u2"}), binding("user", {"user": "u1"})],
    )
    desired = compile_tenant(make_config(), inv, tenant(), CAPS, NOW)
    assert codes(desired.warnings) == [("USER_HAS_NO_EUID", "u1")]
    assert desired.warnings[0].user == "u1"
    assert PLATFORM in desired.warnings[0].message
    groups = by_alias(desired.groups)
    assert [m.user for m in groups["admin"].members] == ["u2"]
    assert groups["user"].members == ()


def test_empty_euid_counts_as_no_euid() -> None:
    inv = inventory([user("u1", "")], [binding("admin", {"user": "u1"})])
    desired = compile_tenant(make_config(), inv, tenant(), CAPS, NOW)
    assert codes(desired.warnings) == [("USER_HAS_NO_EUID", "u1")]
    assert desired.member_count == 0


def test_euid_pattern_gives_platform_euid() -> None:
    inv = inventory([user("u1", "jdoe")], [binding("admin", {"user": "u1"})])
    desired = compile_tenant(make_config(euid_pattern="%S@example.com"), inv, tenant(), CAPS, NOW)
    assert by_alias(desired.groups)["admin"].members == (
        DesiredMember("JDOE@example.com", "u1", "jdoe", (label("admin", 0),)),
    )


def test_warnings_are_sorted_and_all_kinds_together() -> None:
    inv = inventory(
        [user("u1"), user("u2", "bob")],
        [
            binding("zzz", {"user": "u2"}),
            binding("admin", {"user": "u1"}),
            binding("admin", {"user": "u2"}, expires_at=NOW - timedelta(days=1)),
            binding("aaa", {"user": "u2"}),
        ],
    )
    desired = compile_tenant(make_config(), inv, tenant(), CAPS, NOW)
    assert codes(desired.warnings) == [
        ("BINDING_EXPIRED", label("admin", 2)),
        ("UNMAPPED_ROLE", "aaa"),
        ("UNMAPPED_ROLE", "zzz"),
        ("USER_HAS_NO_EUID", "u1"),
    ]


# --- role mappings --------------------------------------------------------------------------------


def test_platform_mappings_are_overridden_per_role_by_the_landing_zone() -> None:
    config = make_config(
        platform_mappings={
            "admin": {"platformGroupAlias": "padmin", "platformRoles": ["p-admin"]},
            "reader": {"platformGroupAlias": "reader", "platformRoles": ["p-read"]},
        },
        zone_mappings={"admin": {"platformGroupAlias": "zadmin", "platformRoles": ["z-admin"]}},
    )
    mappings = effective_role_mappings(config, tenant())
    assert {r: (m.platform_group_alias, m.platform_roles) for r, m in mappings.items()} == {
        "admin": ("zadmin", ("z-admin",)),
        "reader": ("reader", ("p-read",)),
    }
    inv = inventory(
        [user("u1", "alice")], [binding("reader", {"user": "u1"}), binding("admin", {"user": "u1"})]
    )
    desired = compile_tenant(config, inv, tenant(), CAPS, NOW)
    assert [(g.alias, g.name, g.roles, g.project_role) for g in desired.groups] == [
        ("zadmin", "mst-finance.ledger-zadmin", frozenset({"z-admin"}), "admin"),
        ("reader", "mst-finance.ledger-reader", frozenset({"p-read"}), "reader"),
    ]
    assert all([m.user for m in g.members] == ["u1"] for g in desired.groups)
    assert desired.warnings == ()


def test_platform_mappings_alone_are_used_without_zone_mappings() -> None:
    config = make_config(
        platform_mappings={"admin": {"platformGroupAlias": "admin", "platformRoles": ["p-admin"]}},
        zone_mappings={},
    )
    desired = compile_tenant(config, inventory(), tenant(), CAPS, NOW)
    assert [(g.alias, g.roles) for g in desired.groups] == [("admin", frozenset({"p-admin"}))]


def test_two_roles_mapped_to_one_alias_merge_into_one_group() -> None:
    config = make_config(
        zone_mappings={
            "admin": {"platformGroupAlias": "ops", "platformRoles": ["r-admin"]},
            "user": {"platformGroupAlias": "ops", "platformRoles": ["r-user", "r-common"]},
            "reader": {"platformGroupAlias": "read", "platformRoles": ["r-read"]},
        }
    )
    inv = inventory(
        [user("u1", "alice"), user("u2", "bob")],
        [binding("admin", {"user": "u1"}), binding("user", {"user": "u1"}, {"user": "u2"})],
    )
    desired = compile_tenant(config, inv, tenant(), CAPS, NOW)
    assert desired.groups == (
        DesiredGroup(
            alias="ops",
            name="mst-finance.ledger-ops",
            roles=frozenset({"r-admin", "r-user", "r-common"}),
            members=(
                DesiredMember("alice", "u1", "alice", (label("admin", 0), label("user", 1))),
                DesiredMember("bob", "u2", "bob", (label("user", 1),)),
            ),
            project_role="admin,user",
        ),
        DesiredGroup(
            alias="read",
            name="mst-finance.ledger-read",
            roles=frozenset({"r-read"}),
            members=(),
            project_role="reader",
        ),
    )


def test_groups_exist_for_every_mapped_role_without_bindings() -> None:
    desired = compile_tenant(make_config(), inventory(), tenant(), CAPS, NOW)
    assert [(g.alias, g.name, g.members) for g in desired.groups] == [
        ("admin", "mst-finance.ledger-admin", ()),
        ("user", "mst-finance.ledger-user", ()),
    ]
    assert desired.bindings == 0
    assert desired.warnings == ()


def test_deleted_tenant_has_no_desired_groups() -> None:
    inv = inventory([user("u1", "alice")], [binding("admin", {"user": "u1"})])
    desired = compile_tenant(make_config(), inv, tenant(deleted=True), CAPS, NOW)
    assert desired.deleted is True
    assert desired.groups == ()
    assert desired.member_count == 0


# --- names ----------------------------------------------------------------------------------------


def test_group_name_prefix_from_capabilities_is_applied() -> None:
    inv = inventory()
    assert [g.name for g in compile_tenant(make_config(), inv, tenant(), CAPS, NOW).groups] == [
        "mst-finance.ledger-admin",
        "mst-finance.ledger-user",
    ]
    assert [g.name for g in compile_tenant(make_config(), inv, tenant(), PLAIN_CAPS, NOW).groups] == [
        "finance.ledger-admin",
        "finance.ledger-user",
    ]


def test_custom_pattern_with_every_placeholder_and_tags() -> None:
    config = make_config(
        pattern="#{customerIdentifier}/#{projectIdentifier:%.3s}/#{platform}/#{tenantLocalId:%.4s}/"
        "#{tagCostCenter:%06d}/#{platformGroupAlias}"
    )
    inv = inventory(projects=[project(tags={"costCenter": 4711})])
    desired = compile_tenant(config, inv, tenant(), CAPS, NOW)
    assert [g.name for g in desired.groups] == [
        "mst-finance/led/aws.eu-central-1/1234/004711/admin",
        "mst-finance/led/aws.eu-central-1/1234/004711/user",
    ]
    assert desired.pattern_values == {
        "workspaceIdentifier": "finance",
        "projectIdentifier": "ledger",
        "platformGroupAlias": "<alias>",
        "platform": PLATFORM,
        "tenantLocalId": "123456789012",
        "tag:costCenter": "4711",
    }


def test_group_name_function() -> None:
    config = make_config(pattern="#{tenantLocalId}-#{platformGroupAlias}")
    platform = config.platform(PLATFORM)
    assert platform is not None
    assert group_name(platform, CAPS, tenant(), "reader", {}) == "mst-123456789012-reader"


def test_unknown_platform_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown platform"):
        compile_tenant(make_config(), inventory(), tenant(platform="gcp.europe"), CAPS, NOW)


# --- compile_all ----------------------------------------------------------------------------------


def test_compile_all_compiles_tenants_of_platforms_with_capabilities() -> None:
    config = Config.model_validate(
        {
            "platforms": [
                {"identifier": PLATFORM, "type": "aws"},
                {"identifier": "gcp.europe", "type": "gcp"},
            ],
            "landingZones": [
                {
                    "identifier": "aws-default",
                    "platform": PLATFORM,
                    "roleMappings": {"admin": {"platformGroupAlias": "admin", "platformRoles": ["r"]}},
                }
            ],
        }
    )
    t1 = tenant()
    t2 = tenant("hr", "payroll")
    t3 = tenant(platform="gcp.europe")
    inv = inventory(
        [user("u1", "alice")],
        [binding("admin", {"user": "u1"}), binding("admin", {"user": "u1"}, ws="hr", project="payroll")],
        projects=[project(), project("hr", "payroll")],
        tenants=[t3, t2, t1],
    )
    result = compile_all(config, inv, {PLATFORM: CAPS}, NOW)
    assert list(result) == ["finance/ledger/aws.eu-central-1", "hr/payroll/aws.eu-central-1"]
    assert result["finance/ledger/aws.eu-central-1"] == compile_tenant(config, inv, t1, CAPS, NOW)
    assert [g.name for g in result["hr/payroll/aws.eu-central-1"].groups] == ["mst-hr.payroll-admin"]
