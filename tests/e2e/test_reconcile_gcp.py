"""The CLI end to end against the local Cloud Identity / Admin SDK / Resource Manager server:
reconcile, plan, and the GCP specifics (IAM policy bindings, etag conflicts, paging, kept grants,
foreign bindings). Results are read back from the server's state, never through the driver.

The server lags as Google does: a group it has just created is unknown to IAM for ``LAG`` seconds
(setIamPolicy: 400 "Group <email> does not exist."), in every test of this module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from platforms.gcp import GcpDriver
from platforms.kit import OWNER_MARKER
from tests.e2e.harness import PEOPLE, E2EProject, Example, PlatformSpec, binding, no_op_driver, user
from tests.support.gcp_server import DOMAIN, GcpServer

pytestmark = pytest.mark.integration

PLATFORM = "gcp.test"
ZONE = "gcp-default"
ADMIN, USER, READER = "finance.ledger-admin", "finance.ledger-user", "finance.ledger-reader"
LEDGER = f"finance/ledger/{PLATFORM}"
PROJECTS = {"ledger": "finance-ledger-1", "payroll": "finance-payroll-1"}
CUSTOM_ROLE = f"projects/{PROJECTS['ledger']}/roles/deployer"
LAG = 1.0
"""Seconds a new group is unknown to IAM: short, within the engine's retries of one run (1 s, 2 s)."""


def email(name: str) -> str:
    return f"{name}@{DOMAIN}"


@dataclass(kw_only=True)
class GcpProject(E2EProject):
    """The GCP project, against the server: one GCP project per project, groups by email."""

    spec = PlatformSpec(
        PLATFORM,
        "gcp",
        ZONE,
        {
            "admin": ("roles/editor", "roles/iam.securityReviewer"),
            "user": ("roles/editor",),
            "reader": ("roles/viewer",),
        },
        local_ids=PROJECTS,
    )
    gcp: GcpServer

    def driver_options(self) -> dict[str, Any]:
        return self.gcp.driver_options(**self.driver_extra)

    def members(self, name: str) -> list[str]:
        return [m.removesuffix("@example.com") for m in self.gcp.members(email(name))]

    def roles(self, name: str, prj: str = "ledger") -> list[str]:
        return self.gcp.roles_of(PROJECTS[prj], f"group:{email(name)}")


@pytest.fixture(scope="module")
def gcp_server() -> Iterator[GcpServer]:
    with GcpServer(iam_lag=LAG) as server:
        yield server


@pytest.fixture
def gp(tmp_path: Path, capsys: pytest.CaptureFixture[str], gcp_server: GcpServer) -> GcpProject:
    gcp_server.reset()
    for name in PEOPLE:
        gcp_server.add_user(email(name))
    gcp_server.add_user("mallory@example.com")
    gcp_server.add_custom_role(CUSTOM_ROLE)
    for project_id in PROJECTS.values():
        # A binding someone else made on each project: it must survive every run.
        gcp_server.add_project(
            project_id, [{"role": "roles/viewer", "members": ["user:mallory@example.com"]}]
        )
    p = GcpProject(root=tmp_path, capsys=capsys, gcp=gcp_server)
    p.write_config()
    p.write_inventory(p.inventory())
    return p


def foreign_binding_intact(gp: GcpProject) -> None:
    for project_id in PROJECTS.values():
        viewers = [b for b in gp.gcp.policy(project_id)["bindings"] if b["role"] == "roles/viewer"]
        assert len(viewers) == 1
        assert viewers[0]["members"][0] == "user:mallory@example.com"


def test_full_reconcile_from_empty_then_nothing_left(gp: GcpProject) -> None:
    before = gp.plan_exit(2)
    assert f"+ create group {ADMIN}" in before.out
    assert f"+ grant roles/iam.securityReviewer to {ADMIN}" in before.out
    assert gp.gcp.groups() == {}, "plan must not write to the platform"

    gp.converge()
    groups = gp.gcp.groups()
    payroll = ["finance.payroll-admin", "finance.payroll-user", "finance.payroll-reader"]
    assert sorted(groups) == sorted(email(n) for n in [ADMIN, USER, READER, *payroll])
    assert all(g["description"].startswith(OWNER_MARKER) for g in groups.values())
    assert groups[email(ADMIN)]["description"] == f"{OWNER_MARKER} tenant={LEDGER}"
    assert gp.members(ADMIN) == ["alice"]
    assert gp.members(USER) == ["bob", "carol"]
    assert gp.members(READER) == ["dave"]
    assert gp.members("finance.payroll-admin") == ["erin"]
    assert gp.roles(ADMIN) == ["roles/editor", "roles/iam.securityReviewer"]
    assert gp.roles(USER) == ["roles/editor"]
    assert gp.roles(READER) == ["roles/viewer"]
    assert gp.roles("finance.payroll-admin", "payroll") == ["roles/editor", "roles/iam.securityReviewer"]
    assert gp.roles(ADMIN, "payroll") == [], "a tenant's groups are bound on its own project only"
    foreign_binding_intact(gp)

    gp.assert_converged()


def tenant_status(gp: GcpProject, key: str) -> dict[str, Any]:
    status = gp.cli("status", "-o", "json").json()
    found: dict[str, Any] = next(t for t in status["tenants"] if t["tenant"] == key)
    return found


def test_a_new_landing_zone_converges_within_the_run_despite_the_lag(gp: GcpProject) -> None:
    """Every grant of a new group meets IAM's lag (LAG s) first; the engine's retries outlast it."""
    r = gp.converge("--wait-pending", "0")  # no requeue: within the run
    assert "PENDING" not in r.out
    assert "FAILED" not in r.out
    assert gp.gcp.calls("POST", r":setIamPolicy$") > 6, "the first grants were refused (the lag is on)"
    assert len(gp.gcp.groups()) == 6
    assert gp.roles(ADMIN) == ["roles/editor", "roles/iam.securityReviewer"]
    assert tenant_status(gp, LEDGER)["warnings"] == []
    gp.assert_converged()


def test_a_lag_longer_than_the_run_is_pending_then_converges_on_the_next_run(gp: GcpProject) -> None:
    gp.gcp.world.iam_lag = 3600.0  # longer than the run's retries
    r = gp.cli("reconcile", "--all", "--wait-pending", "0")
    assert r.code == 1, r.out + r.err
    assert f"{LEDGER}: PENDING (platform)" in r.out
    assert "IAM does not know the group yet" in r.out
    assert "FAILED" not in r.out
    groups = gp.gcp.groups()
    assert len(groups) == 6, "every group was created, once"
    assert gp.members(USER) == ["bob", "carol"], "the changes before the grant were applied"
    assert gp.roles(ADMIN) == []
    ledger = tenant_status(gp, LEDGER)
    assert [w["code"] for w in ledger["warnings"]] == ["PLATFORM_PENDING"]

    gp.gcp.catch_up()  # the lag is over
    done = gp.converge("--wait-pending", "0")
    assert "PENDING" not in done.out
    assert gp.gcp.groups() == groups, "no group created again, none replaced"
    assert gp.roles(ADMIN) == ["roles/editor", "roles/iam.securityReviewer"]
    assert gp.roles(READER) == ["roles/viewer"]
    assert tenant_status(gp, LEDGER)["warnings"] == []
    foreign_binding_intact(gp)
    gp.assert_converged()


def test_creates_still_running_are_pending_then_converge_without_a_duplicate(gp: GcpProject) -> None:
    """The first groups.create of each tenant answers an Operation with done:false, and the group
    stays invisible past the run: the tenants are pending (not failed), each create was sent once;
    once the creates have finished the next run finds the groups by lookup and converges."""
    gp.gcp.world.slow_creates, gp.gcp.world.create_delay = 2, 3600.0
    r = gp.cli("reconcile", "--all", "--wait-pending", "0")
    assert r.code == 1, r.out + r.err
    assert f"{LEDGER}: PENDING (platform)" in r.out
    assert "still being created" in r.out
    assert "FAILED" not in r.out
    assert gp.gcp.calls("POST", r"/v1/groups$") == 2, "one create per tenant: the first group pends"
    assert len(gp.gcp.being_created()) == 2
    assert [w["code"] for w in tenant_status(gp, LEDGER)["warnings"]] == ["PLATFORM_PENDING"]

    gp.gcp.catch_up()
    gp.converge("--wait-pending", "0")
    assert len(gp.gcp.groups()) == 6
    assert gp.gcp.calls("POST", r"/v1/groups$") == 6, "one create per group, none sent twice"
    assert gp.members(USER) == ["bob", "carol"]
    assert gp.roles(ADMIN) == ["roles/editor", "roles/iam.securityReviewer"]
    assert tenant_status(gp, LEDGER)["warnings"] == []
    gp.assert_converged()


def test_reconcile_waits_for_a_pending_tenant_and_exits_0(gp: GcpProject) -> None:
    """The lag outlasts the first run (its three attempts at the first grant); reconcile runs the
    tenant again after pendingRetryAfter and it converges: exit 0."""
    gp.gcp.world.iam_lag = 3600.0
    gp.driver_extra = {"pendingRetryAfter": 0.5}
    gp.write_config()
    sets = 0

    def lag_ends_after_the_first_run(method: str, path: str) -> None:
        nonlocal sets
        if method == "POST" and path.endswith(":setIamPolicy"):
            sets += 1
            if sets == 4:  # the first run's grant was refused 3 times; this is the requeued run
                gp.gcp.world.iam_known_from.clear()  # (the world is locked while a watcher runs)

    gp.gcp.watch(lag_ends_after_the_first_run)
    r = gp.cli("reconcile", "--tenant", LEDGER, "--wait-pending", "60")
    assert r.code == 0, r.out + r.err
    assert "waiting 0.5 s for the platform to catch up with 1 tenants" in r.err
    assert f"{LEDGER}: converged" in r.out
    assert len(gp.gcp.groups()) == 3
    assert gp.roles(ADMIN) == ["roles/editor", "roles/iam.securityReviewer"]
    assert tenant_status(gp, LEDGER)["warnings"] == []


def test_no_op_reconcile_makes_seven_calls_per_tenant(gp: GcpProject) -> None:
    """With the lookup cache warm, a converged tenant with 3 groups costs groups.get and
    groups.memberships.list per group plus one projects.getIamPolicy: 7 calls."""
    gp.converge()
    driver = no_op_driver(gp, GcpDriver)
    # two tenants with 3 groups each: 7 calls per tenant
    assert dict(driver.api_calls) == {
        "groups.get": 6,
        "groups.memberships.list": 6,
        "projects.getIamPolicy": 2,
    }


def test_membership_and_user_paging(gp: GcpProject) -> None:
    gp.gcp.world.membership_page_max = 2
    gp.gcp.world.user_page_max = 2
    gp.driver_extra = {"userListThreshold": 0}  # list the directory instead of one get per user
    gp.write_config()
    many = [f"dev{i:02d}" for i in range(7)]
    for name in many:
        gp.gcp.add_user(email(name))
    gp.write_inventory(
        gp.inventory(extra=[*(user(n, n) for n in many), binding("finance", "ledger", "user", *many)])
    )
    gp.converge()
    assert gp.members(USER) == sorted(["bob", "carol", *many])
    assert gp.gcp.calls("GET", r"/admin/directory/v1/users$") == 7  # 13 users, 2 a page
    assert gp.gcp.calls("GET", r"/admin/directory/v1/users/") == 0
    assert gp.cli("plan", "--detailed-exitcode").code == 0, "every page of members was read"


def test_concurrent_policy_edit_during_reconcile_survives(gp: GcpProject) -> None:
    def someone_else(policy: dict[str, Any]) -> None:
        policy["bindings"].append({"role": "roles/browser", "members": ["user:mallory@example.com"]})

    gp.gcp.interfere(PROJECTS["ledger"], someone_else)
    gp.converge()
    assert PROJECTS["ledger"] not in gp.gcp.world.interference, "a write met the changed etag (409)"
    bindings = gp.gcp.policy(PROJECTS["ledger"])["bindings"]
    assert {"role": "roles/browser", "members": ["user:mallory@example.com"]} in bindings
    assert gp.roles(ADMIN) == ["roles/editor", "roles/iam.securityReviewer"]
    assert gp.roles(USER) == ["roles/editor"]
    assert gp.roles(READER) == ["roles/viewer"]
    foreign_binding_intact(gp)
    assert gp.cli("plan", "--detailed-exitcode").code == 0


def test_role_mapping_change_revokes_old_and_grants_new(gp: GcpProject) -> None:
    gp.converge()
    gp.mappings["user"] = [CUSTOM_ROLE]
    gp.write_config()
    r = gp.cli("plan")
    assert f"+ grant {CUSTOM_ROLE} to {USER}" in r.out
    assert f"- revoke roles/editor from {USER}" in r.out
    gp.converge()
    assert gp.roles(USER) == [CUSTOM_ROLE]
    assert gp.roles(ADMIN) == ["roles/editor", "roles/iam.securityReviewer"], "the shared binding keeps admin"
    assert gp.members(USER) == ["bob", "carol"]
    foreign_binding_intact(gp)


def test_pattern_change_renames_make_before_break(gp: GcpProject) -> None:
    gp.converge()
    old = {n: gp.gcp.group_id(email(n)) for n in (ADMIN, USER, READER)}
    at_first_delete: dict[str, tuple[list[str], list[str]]] = {}

    def snapshot(method: str, path: str) -> None:  # what the new groups hold when the first old one goes
        if method == "DELETE" and path.removeprefix("/v1/") in old.values() and not at_first_delete:
            for a in ("admin", "user", "reader"):
                new = f"finance-ledger-{a}"
                at_first_delete[a] = (gp.members(new), gp.roles(new))

    gp.gcp.watch(snapshot)
    gp.gcp.world.requests.clear()
    renamed = gp.rename_dashed()
    gp.converge()
    groups = gp.gcp.groups()
    assert sorted(groups) == sorted(email(n) for n in renamed)
    assert not set(old.values()) & {g["name"] for g in groups.values()}
    assert gp.members("finance-ledger-user") == ["bob", "carol"]
    assert gp.roles("finance-ledger-admin") == ["roles/editor", "roles/iam.securityReviewer"]
    assert gp.roles(ADMIN) == [], "the old group's bindings were revoked, not left as deleted:group"
    assert not any(
        "deleted:" in m for b in gp.gcp.policy(PROJECTS["ledger"])["bindings"] for m in b["members"]
    )
    # Make before break: the new groups were created and filled before the first old one went.
    assert at_first_delete == {
        "admin": (["alice"], ["roles/editor", "roles/iam.securityReviewer"]),
        "user": (["bob", "carol"], ["roles/editor"]),
        "reader": (["dave"], ["roles/viewer"]),
    }
    foreign_binding_intact(gp)
    assert gp.cli("plan", "--detailed-exitcode").code == 0


def test_role_bound_by_hand_is_kept_then_removed_by_policy(gp: GcpProject) -> None:
    gp.converge()
    project_id = PROJECTS["ledger"]
    policy = gp.gcp.policy(project_id)
    gp.gcp.set_policy(
        project_id,
        [*policy["bindings"], {"role": "roles/storage.admin", "members": [f"group:{email(USER)}"]}],
    )
    r = gp.cli("plan", "--detailed-exitcode")
    assert r.code == 0, r.out
    assert f"~ keep roles/storage.admin on {USER}" in r.out
    gp.converge()
    assert gp.roles(USER) == ["roles/editor", "roles/storage.admin"]
    gp.platform_extra = {"externalGrants": "remove"}
    gp.write_config()
    gp.converge()
    assert gp.roles(USER) == ["roles/editor"]
    foreign_binding_intact(gp)


def test_foreign_group_with_our_name_is_left_alone(gp: GcpProject) -> None:
    foreign = gp.gcp.add_group(email(ADMIN), description="made by hand", members=(email("erin"),))
    r = gp.converge()
    assert "FOREIGN_GROUP_NAME_TAKEN" in r.out
    groups = gp.gcp.groups()
    assert groups[email(ADMIN)]["name"] == foreign
    assert groups[email(ADMIN)]["description"] == "made by hand"
    assert gp.members(ADMIN) == ["erin"]
    assert gp.roles(ADMIN) == []
    assert gp.members(USER) == ["bob", "carol"]
    foreign_binding_intact(gp)


def test_user_not_found_then_appearing_clears_the_warning(gp: GcpProject) -> None:
    gp.write_inventory(
        gp.inventory(extra=[user("zoe", "zoe"), binding("finance", "ledger", "reader", "zoe")])
    )
    gp.converge()
    status = gp.cli("status", "-o", "json").json()
    ledger = next(t for t in status["tenants"] if t["tenant"] == LEDGER)
    assert [(w["code"], w["subject"]) for w in ledger["warnings"]] == [("USER_NOT_FOUND", "zoe")]
    assert gp.members(READER) == ["dave"]
    gp.gcp.add_user("zoe@example.com")
    gp.converge()
    assert gp.members(READER) == ["dave", "zoe"]
    status = gp.cli("status", "-o", "json").json()
    ledger = next(t for t in status["tenants"] if t["tenant"] == LEDGER)
    assert ledger["warnings"] == []


def test_empty_desired_state_trips_the_deletion_guard(gp: GcpProject) -> None:
    gp.converge()
    gp.write_inventory(gp.inventory({"admin": (), "user": (), "reader": ()}))
    r = gp.cli("reconcile", "--all")
    assert r.code == 1
    assert "DELETION_GUARD" in r.out
    assert gp.members(ADMIN) == ["alice"]
    assert gp.members(USER) == ["bob", "carol"]
    assert gp.members(READER) == ["dave"]
    confirmed = gp.cli("reconcile", "--all", "--allow-deletions")
    assert confirmed.code == 0, confirmed.out
    assert [gp.members(n) for n in (ADMIN, USER, READER)] == [[], [], []]
    foreign_binding_intact(gp)


def test_removed_binding_removes_the_member(gp: GcpProject) -> None:
    r = gp.replan(user=("bob",))
    assert f"- remove member carol@example.com from {USER}" in r.out
    gp.converge()
    assert gp.members(USER) == ["bob"]


def test_validate_refuses_names_and_roles_gcp_cannot_hold(gp: GcpProject) -> None:
    gp.pattern = "#{workspaceIdentifier}..#{projectIdentifier}-#{platformGroupAlias}"
    gp.mappings["reader"] = ["viewer"]
    gp.write_config()
    r = gp.cli("validate")
    assert r.code == 1
    assert "finance..ledger-admin" in r.out + r.err
    assert "'viewer' is not a role id this platform accepts (like roles/editor)" in r.out + r.err


def test_the_example_reconciles_against_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], gcp_server: GcpServer
) -> None:
    """examples/gcp as a user would adapt it: only the gcp block points at the local server."""
    gcp_server.reset()
    example = Example.copy("gcp", tmp_path, capsys)
    (platform,) = example.config["platforms"]
    platform["gcp"] = gcp_server.driver_options(customerId=platform["gcp"]["customerId"])
    gcp_server.world.customer = platform["gcp"]["customerId"]
    example.save()
    for name in ("alice", "bob", "carol"):
        gcp_server.add_user(email(name))
    gcp_server.add_project("finance-ledger-prod")
    gcp_server.add_project("finance-payroll-prod")
    gcp_server.add_custom_role("organizations/123456789012/roles/deployer")

    cli = example.cli

    assert cli("validate").code == 0
    done = cli("reconcile", "--all")
    assert done.code == 0, done.out + done.err
    assert gcp_server.members(email("finance.payroll-reader")) == [email("alice"), email("bob")]
    assert gcp_server.roles_of("finance-payroll-prod", f"group:{email('finance.payroll-admin')}") == [
        "organizations/123456789012/roles/deployer",
        "roles/viewer",
    ]
    assert cli("plan", "--detailed-exitcode").code == 0
