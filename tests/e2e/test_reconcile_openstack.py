"""The CLI end to end against a real Keystone: reconcile, plan, and the OpenStack specifics
(role names, federated users, external role assignments). Results are read back from Keystone with
plain openstacksdk (``World``), never through the driver."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from platforms.kit import OWNER_MARKER
from platforms.openstack import OpenstackDriver
from tests.e2e.harness import PEOPLE, E2EProject, PlatformSpec, binding, no_op_driver, user
from tests.support.keystone import ADMIN_PASSWORD, PASSWORD_ENV, World, shared

pytestmark = pytest.mark.integration

PLATFORM = "openstack.test"
ZONE = "os-default"
ADMIN, USER, READER = "finance.ledger-admin", "finance.ledger-user", "finance.ledger-reader"
LEDGER = f"finance/ledger/{PLATFORM}"
CUSTOM_ROLE = "heat_stack_owner"


@dataclass(kw_only=True)
class OsProject(E2EProject):
    """The OpenStack project, against Keystone: its own domain, a Keystone project per project."""

    spec = PlatformSpec(
        PLATFORM,
        "openstack",
        ZONE,
        {"admin": ("member", CUSTOM_ROLE), "user": ("member",), "reader": ("reader",)},
    )
    world: World

    @property
    def projects(self) -> dict[str, str]:
        return self.local_ids

    def driver_options(self) -> dict[str, Any]:
        return self.world.driver_options(**self.driver_extra)

    def group(self, name: str) -> str:
        return str(self.world.groups()[name].id)

    def members(self, name: str) -> list[str]:
        return [m.removesuffix("@example.com") for m in self.world.members(self.group(name))]

    def roles(self, name: str, prj: str = "ledger") -> list[str]:
        return self.world.assignments(self.projects[prj], self.group(name))


@pytest.fixture
def os_proj(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[OsProject]:
    monkeypatch.setenv(PASSWORD_ENV, ADMIN_PASSWORD)
    world = World(shared(), uuid.uuid4().hex[:10])
    ident = world.conn.identity
    if ident.find_role(CUSTOM_ROLE) is None:  # global; made once per Keystone, never deleted
        ident.create_role(name=CUSTOM_ROLE)
    p = OsProject(root=tmp_path, capsys=capsys, world=world)
    p.local_ids = {prj: world.project(prj) for prj in ("ledger", "payroll")}
    for name in PEOPLE:
        world.user(f"{name}@example.com")
    p.write_config()
    p.write_inventory(p.inventory())
    yield p
    world.cleanup()


def test_full_reconcile_of_several_tenants_then_nothing_left(os_proj: OsProject) -> None:
    before = os_proj.plan_exit(2)
    assert "+ create group finance.ledger-admin" in before.out
    assert f"+ grant {CUSTOM_ROLE} to finance.ledger-admin" in before.out
    assert os_proj.world.groups() == {}, "plan must not write to the platform"

    os_proj.converge()
    groups = os_proj.world.groups()
    payroll = ["finance.payroll-admin", "finance.payroll-user", "finance.payroll-reader"]
    assert sorted(groups) == sorted([ADMIN, USER, READER, *payroll])
    assert all(g.description.startswith(OWNER_MARKER) for g in groups.values())
    assert os_proj.members(ADMIN) == ["alice"]
    assert os_proj.members(USER) == ["bob", "carol"]
    assert os_proj.members(READER) == ["dave"]
    assert os_proj.members("finance.payroll-admin") == ["erin"]
    assert os_proj.roles(ADMIN) == sorted(["member", CUSTOM_ROLE])
    assert os_proj.roles(USER) == ["member"]
    assert os_proj.roles(READER) == ["reader"]
    assert os_proj.roles("finance.payroll-admin", "payroll") == sorted(["member", CUSTOM_ROLE])
    assert os_proj.world.assignments(os_proj.projects["payroll"], os_proj.group(ADMIN)) == []

    os_proj.assert_converged()


def test_role_mapping_change_revokes_old_and_grants_new(os_proj: OsProject) -> None:
    os_proj.converge()
    os_proj.mappings["user"] = [CUSTOM_ROLE]
    os_proj.write_config()
    r = os_proj.cli("plan")
    assert f"+ grant {CUSTOM_ROLE} to {USER}" in r.out
    assert f"- revoke member from {USER}" in r.out
    os_proj.converge()
    assert os_proj.roles(USER) == [CUSTOM_ROLE]
    assert os_proj.members(USER) == ["bob", "carol"]


def test_missing_role_in_keystone_fails_the_tenant_naming_it(os_proj: OsProject) -> None:
    os_proj.mappings["reader"] = ["no_such_role_here"]
    os_proj.write_config()
    r = os_proj.cli("reconcile", "--all")
    assert r.code != 0
    assert "no_such_role_here" in r.out + r.err


def test_removed_binding_removes_the_member(os_proj: OsProject) -> None:
    r = os_proj.replan(user=("bob",))
    assert f"- remove member carol@example.com from {USER}" in r.out
    os_proj.converge()
    assert os_proj.members(USER) == ["bob"]


def test_pattern_change_renames_make_before_break(os_proj: OsProject) -> None:
    os_proj.converge()
    old = {n: os_proj.group(n) for n in (ADMIN, USER, READER)}
    renamed = os_proj.rename_dashed()
    os_proj.converge()
    groups = os_proj.world.groups()
    assert sorted(groups) == renamed
    assert not set(old.values()) & {g.id for g in groups.values()}
    assert os_proj.members("finance-ledger-user") == ["bob", "carol"]
    assert os_proj.roles("finance-ledger-admin") == sorted(["member", CUSTOM_ROLE])
    assert os_proj.cli("plan", "--detailed-exitcode").code == 0


def test_foreign_group_with_our_name_is_left_alone(os_proj: OsProject) -> None:
    ident = os_proj.world.conn.identity
    foreign = ident.create_group(name=ADMIN, domain_id=os_proj.world.domain.id, description="made by hand")
    erin = ident.find_user("erin@example.com", domain_id=os_proj.world.domain.id)
    ident.add_user_to_group(erin, foreign)
    r = os_proj.converge()
    assert "FOREIGN_GROUP_NAME_TAKEN" in r.out
    groups = os_proj.world.groups()
    assert groups[ADMIN].id == foreign.id
    assert groups[ADMIN].description == "made by hand"
    assert os_proj.members(ADMIN) == ["erin"]
    assert os_proj.roles(ADMIN) == []
    assert os_proj.members(USER) == ["bob", "carol"]


def test_user_appearing_later_clears_the_warning(os_proj: OsProject) -> None:
    os_proj.write_inventory(
        os_proj.inventory(extra=[user("zoe", "zoe"), binding("finance", "ledger", "reader", "zoe")])
    )
    os_proj.converge()
    status = os_proj.cli("status", "-o", "json").json()
    ledger = next(t for t in status["tenants"] if t["tenant"] == LEDGER)
    assert [(w["code"], w["subject"]) for w in ledger["warnings"]] == [("USER_NOT_FOUND", "zoe")]
    os_proj.world.user("zoe@example.com")
    os_proj.converge()
    assert os_proj.members(READER) == ["dave", "zoe"]
    status = os_proj.cli("status", "-o", "json").json()
    ledger = next(t for t in status["tenants"] if t["tenant"] == LEDGER)
    assert ledger["warnings"] == []


def test_federated_users_are_created_once_and_reused(os_proj: OsProject) -> None:
    world = os_proj.world
    fed_domain = world.conn.identity.create_domain(name=f"mesh-{world.tag}")
    idp = world.idp(fed_domain.name)
    os_proj.driver_extra = {"federatedIdp": {"enabled": True, "idpId": idp, "userDomain": fed_domain.name}}
    os_proj.write_config()
    os_proj.write_inventory(
        os_proj.inventory(
            extra=[
                user("zoe", "zoe"),
                binding("finance", "ledger", "reader", "zoe"),
                binding("finance", "ledger", "user", "zoe"),
            ],
        )
    )
    plan = os_proj.cli("plan")
    assert plan.out.count("+ ensure user zoe@example.com") == 1
    assert f"+ add member zoe@example.com to {READER}" in plan.out
    assert "USER_NOT_FOUND" not in plan.out
    os_proj.converge()
    (row,) = world.federated_users(idp, "zoe@example.com")
    assert row["domain_id"] == fed_domain.id
    assert "zoe" in os_proj.members(READER)
    assert "zoe" in os_proj.members(USER)
    again = os_proj.cli("plan", "--detailed-exitcode")
    assert again.code == 0, again.out
    os_proj.converge()
    assert len(world.federated_users(idp, "zoe@example.com")) == 1
    assert len(list(world.conn.identity.users(domain_id=fed_domain.id))) == 1


def test_unmanaged_role_assignment_is_kept_then_removed_by_policy(os_proj: OsProject) -> None:
    os_proj.converge()
    world = os_proj.world
    world.conn.identity.assign_project_role_to_group(
        os_proj.projects["ledger"], os_proj.group(USER), world.role_id("manager")
    )
    r = os_proj.cli("plan", "--detailed-exitcode")
    assert r.code == 0, r.out
    assert f"~ keep manager on {USER}" in r.out
    os_proj.converge()
    assert os_proj.roles(USER) == sorted(["member", "manager"])
    os_proj.platform_extra = {"externalGrants": "remove"}
    os_proj.write_config()
    os_proj.converge()
    assert os_proj.roles(USER) == ["member"]


def test_no_op_reconcile_reads_assignments_once_per_tenant(os_proj: OsProject) -> None:
    """With the lookup cache warm, a converged tenant costs get_group and list_group_users once per
    owned group, one list_role_assignments for the whole project, and nothing else."""
    os_proj.converge()
    driver = no_op_driver(os_proj, OpenstackDriver)
    # two tenants with 3 groups each: 2 * 3 + 1 = 7 calls per tenant
    assert dict(driver.api_calls) == {"get_group": 6, "list_group_users": 6, "list_role_assignments": 2}


# --- plan files and snapshots -----------------------------------------------------------------


def test_a_saved_plan_applies_exactly_or_is_refused_when_keystone_changed(os_proj: OsProject) -> None:
    os_proj.converge()
    os_proj.write_inventory(os_proj.inventory({"admin": ("alice",), "user": ("bob",), "reader": ("dave",)}))
    path = os_proj.root / "plan.json"
    assert os_proj.cli("plan", "--out", str(path), "--detailed-exitcode").code == 2
    # Someone adds erin to the reader group by hand between plan and apply.
    ident = os_proj.world.conn.identity
    erin = ident.find_user("erin@example.com", domain_id=os_proj.world.domain.id)
    ident.add_user_to_group(erin, ident.get_group(os_proj.group(READER)))
    refused = os_proj.cli("apply", str(path))
    assert refused.code == 1
    assert f"group {READER}: member erin@example.com added" in refused.err
    assert os_proj.members(USER) == ["bob", "carol"], "nothing may be applied from a stale plan"

    assert os_proj.cli("plan", "--out", str(path), "--detailed-exitcode").code == 2
    done = os_proj.cli("apply", str(path))
    assert done.code == 0, done.out + done.err
    assert os_proj.members(USER) == ["bob"]
    assert os_proj.members(READER) == ["dave"]  # erin was not ours to keep: the plan removed her
    assert os_proj.cli("plan", "--detailed-exitcode").code == 0


def test_a_plan_against_a_keystone_snapshot_equals_the_live_plan(os_proj: OsProject) -> None:
    os_proj.converge()
    snap = os_proj.root / "snap.json"
    assert os_proj.cli("snapshot", "--out", str(snap)).code == 0
    os_proj.write_inventory(
        os_proj.inventory({"admin": ("alice", "erin"), "user": ("carol",), "reader": ("dave",)})
    )
    live = os_proj.cli("plan", "-o", "json")
    offline = os_proj.cli("plan", "-o", "json", "--observed", str(snap))
    assert live.code == offline.code == 0, live.err + offline.err
    assert offline.json()["tenants"] == live.json()["tenants"]
    assert live.json()["summary"] == {"add": 1, "remove": 1, "warnings": 0}


# --- tenant deletion --------------------------------------------------------------------------


def test_deleting_a_tenant_then_removing_another_from_the_inventory(os_proj: OsProject) -> None:
    os_proj.converge()
    payroll = f"finance/payroll/{PLATFORM}"
    payroll_groups = ["finance.payroll-admin", "finance.payroll-reader", "finance.payroll-user"]
    docs = os_proj.inventory()
    for d in docs:
        if d["kind"] == "meshTenant" and d["metadata"]["ownedByProject"] == "payroll":
            d["spec"]["deleted"] = True
    os_proj.write_inventory(docs)
    os_proj.converge()
    assert not set(payroll_groups) & set(os_proj.world.groups())
    with os_proj.store() as store:
        assert store.tenant_statuses()[payroll] == "Deleted"
    assert os_proj.roles(ADMIN) == sorted(["member", CUSTOM_ROLE]), "the other tenant is untouched"

    # ledger leaves the inventory: left alone until an operator allows it
    rest = [
        d
        for d in os_proj.inventory()
        if d["kind"] != "meshTenant" or d["metadata"]["ownedByProject"] != "ledger"
    ]
    os_proj.write_inventory(rest)
    held = os_proj.cli("reconcile", "--all")
    assert f"{LEDGER}: not reconciled: in the state store but no longer in the inventory" in held.out
    assert os_proj.members(USER) == ["bob", "carol"]
    done = os_proj.cli("reconcile", "--all", "--allow-deletions")
    assert done.code == 0, done.out + done.err
    assert not {ADMIN, USER, READER} & set(os_proj.world.groups())
    with os_proj.store() as store:
        assert store.tenant_statuses()[LEDGER] == "Deleted"
