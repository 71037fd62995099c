"""The CLI end to end against the local Graph + ARM + token server: reconcile, plan and the Azure
specifics (lookup strategies, case and ambiguity, B2B guests, throttling, Entra ID's replication lag,
the removal of unmanaged members and role assignments, rename, the deletion guard). The driver signs
in with the real ClientSecretCredential (MSAL) against the server's token endpoint. Results are read
back from the server's state, never through the driver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from platforms.azure import AzureDriver
from platforms.kit import OWNER_MARKER
from replicator.engine.results import Requeue
from replicator.service.daemon import Daemon
from replicator.service.status import status_doc
from tests.e2e.harness import PEOPLE, E2EProject, Example, PlatformSpec, binding, no_op_driver, user
from tests.support.azure_server import CLIENT_SECRET, AzureServer

pytestmark = pytest.mark.integration

PLATFORM = "azure.test"
ZONE = "azure-default"
SUBS = {"ledger": "1d2c3b4a-0000-4000-8000-00000000000a", "payroll": "1d2c3b4a-0000-4000-8000-00000000000b"}
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
ADMIN, USER, READERS = "finance.ledger-admin", "finance.ledger-user", "finance.ledger-reader"
LEDGER = f"finance/ledger/{PLATFORM}"
LAG, ARM_LAG = 1.0, 2.0
"""Seconds (short, so that the suite stays fast): the lag every test here runs with."""


@dataclass(kw_only=True)
class AzProject(E2EProject):
    """The Azure project, against the server: users by name, one subscription per project."""

    spec = PlatformSpec(
        PLATFORM,
        "azure",
        ZONE,
        {"admin": (OWNER,), "user": (CONTRIBUTOR,), "reader": (READER,)},
        local_ids=SUBS,
    )
    azure: AzureServer

    def driver_options(self) -> dict[str, Any]:
        return self.azure.driver_options(**self.driver_extra)

    def group(self, name: str) -> str:
        return self.azure.group_id(name)

    def members(self, name: str) -> list[str]:
        by_id = {v: k for k, v in self.users.items()}
        return sorted(by_id.get(m, m) for m in self.azure.members(self.group(name)))

    def roles(self, name: str, prj: str = "ledger") -> list[str]:
        return self.azure.roles(self.group(name), f"/subscriptions/{SUBS[prj]}")


@pytest.fixture
def az(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    azure_server: AzureServer,
) -> AzProject:
    monkeypatch.setenv("AZURE_TEST_SECRET", CLIENT_SECRET)
    azure_server.reset()  # the session's server (tests/support/sessions.py), with a new one's page sizes
    azure_server.page_size, azure_server.arm_page_size = 100, 50
    # Entra ID's replication lag, on for every test here, short: a new group or guest is unknown
    # to Graph's reads and references for LAG seconds, a new principal to ARM for ARM_LAG.
    azure_server.lag, azure_server.arm_lag = LAG, ARM_LAG
    p = AzProject(root=tmp_path, capsys=capsys, azure=azure_server)
    p.users = {n: azure_server.add_user(f"{n}@example.com") for n in PEOPLE}
    p.write_config()
    p.write_inventory(p.inventory())
    return p


def test_full_reconcile_of_two_subscriptions_then_nothing_left(az: AzProject) -> None:
    before = az.plan_exit(2)
    assert f"+ create group {ADMIN}" in before.out
    assert f"+ grant {OWNER} to {ADMIN}" in before.out
    assert az.azure.groups() == {}, "plan must not write to the platform"
    assert az.azure.count("graph", "POST") == az.azure.count("arm", "PUT") == 0

    az.converge()
    groups = az.azure.groups()
    payroll = ["finance.payroll-admin", "finance.payroll-user", "finance.payroll-reader"]
    assert sorted(groups) == sorted([ADMIN, USER, READERS, *payroll])
    for name in groups:
        g = az.azure.group(az.group(name))
        assert g["description"].startswith(OWNER_MARKER)
        assert (g["securityEnabled"], g["mailEnabled"]) == (True, False)
    assert az.members(ADMIN) == ["alice"]
    assert az.members(USER) == ["bob", "carol"]
    assert az.members(READERS) == ["dave"]
    assert az.members("finance.payroll-admin") == ["erin"]
    assert az.roles(ADMIN) == [OWNER]
    assert az.roles(USER) == [CONTRIBUTOR]
    assert az.roles(READERS) == [READER]
    assert az.roles("finance.payroll-admin", "payroll") == [OWNER]
    assert az.roles(ADMIN, "payroll") == []

    az.assert_converged()


def test_lookup_by_user_principal_name_with_case_and_ambiguity(az: AzProject) -> None:
    az.azure.reset()
    az.users = {
        "alice": az.azure.add_user("alice.a@corp.example", upn="alice@example.com"),
        "bob": az.azure.add_user("bob.b@corp.example", upn="Bob@Example.com"),  # only the case differs
        "carol": az.azure.add_user("carol@example.com", upn="carol.c@corp.example"),  # mail would match
        "dave": az.azure.add_user(None, upn="dave@example.com"),
        "erin": az.azure.add_user(None, upn="erin@example.com"),
    }
    az.replication["aadUserLookupStrategy"] = "UserByUsernameLookupStrategy"
    az.write_config()
    plan = az.cli("plan", "-o", "json")
    ledger = next(t for t in plan.json()["tenants"] if t["tenant"] == LEDGER)
    codes = sorted((w["code"], w["euid"]) for w in ledger["warnings"])
    assert codes == [("CASE_MISMATCH", "bob"), ("USER_NOT_FOUND", "carol")]
    az.converge()
    assert az.members(ADMIN) == ["alice"]
    assert az.members(USER) == ["bob"]
    assert az.members(READERS) == ["dave"]

    twin = az.azure.add_user(None, upn="DAVE@example.com")  # a second user for dave's key
    az.replication["lookupCacheTtl"] = 0  # ask Entra ID again, not the store's lookup cache
    az.write_config()
    plan = az.cli("plan", "-o", "json")
    ledger = next(t for t in plan.json()["tenants"] if t["tenant"] == LEDGER)
    assert ("AMBIGUOUS_MATCH", "dave") in {(w["code"], w["euid"]) for w in ledger["warnings"]}
    az.converge()
    assert az.members(READERS) == ["dave"]  # an ambiguous user who already holds the role keeps it
    assert twin not in az.azure.members(az.group(READERS))


def test_more_than_a_page_of_members(az: AzProject) -> None:
    crowd = [f"p{i:03d}" for i in range(130)]
    for name in crowd:
        az.users[name] = az.azure.add_user(f"{name}@example.com")
    az.write_inventory(
        az.inventory({"admin": ("alice",), "user": tuple(crowd), "reader": ("dave",)})
        + [user(n, n) for n in crowd]
    )
    az.converge()
    assert az.members(USER) == crowd
    again = az.cli("plan", "--detailed-exitcode")
    assert again.code == 0, again.out  # all 130 members observed across two pages
    assert az.azure.count("graph", "GET", r"/members$") >= 2


def test_unmanaged_members_and_role_assignments_are_removed(az: AzProject) -> None:
    az.converge()
    sub = f"/subscriptions/{SUBS['ledger']}"
    erin = az.users["erin"]
    az.azure.add_member(az.group(USER), erin)
    az.azure.add_assignment(sub, az.group(USER), READER)
    other = az.azure.add_group("someone-else", "made by hand")
    az.azure.add_assignment(sub, other, READER)
    r = az.cli("plan")
    assert f"- remove member erin@example.com from {USER}" in r.out
    assert f"- revoke {READER} from {USER}" in r.out
    az.converge()
    assert az.members(USER) == ["bob", "carol"]
    assert az.roles(USER) == [CONTRIBUTOR]
    assert az.azure.roles(other, sub) == [READER]  # not our group: untouched

    az.azure.add_assignment(sub, az.group(USER), READER)
    az.platform_extra = {"externalGrants": "keep"}
    az.write_config()
    r = az.cli("plan", "--detailed-exitcode")
    assert r.code == 0, r.out
    assert f"~ keep {READER} on {USER}" in r.out
    az.converge()
    assert az.roles(USER) == sorted([CONTRIBUTOR, READER])


def test_pattern_change_renames_make_before_break(az: AzProject) -> None:
    az.converge()
    old = {n: az.group(n) for n in (ADMIN, USER, READERS)}
    renamed = az.rename_dashed()
    az.converge()
    groups = az.azure.groups()
    assert sorted(groups) == renamed
    assert not set(old.values()) & {i for ids in groups.values() for i in ids}
    assert az.members("finance-ledger-user") == ["bob", "carol"]
    assert az.roles("finance-ledger-admin") == [OWNER]
    assert az.azure.assignments(old[ADMIN]) == []  # the old group's assignments went with it
    assert az.cli("plan", "--detailed-exitcode").code == 0


def test_deletion_guard_withholds_mass_removal(az: AzProject) -> None:
    az.converge()
    az.replication["maxDeletions"] = 1
    az.write_config()
    az.write_inventory(az.inventory({"admin": ("alice",), "user": (), "reader": ()}))
    r = az.cli("reconcile", "--all")
    assert r.code == 1
    assert "DELETION_GUARD" in r.out + r.err
    assert az.members(USER) == ["bob", "carol"]
    assert az.members(READERS) == ["dave"]
    done = az.cli("reconcile", "--all", "--allow-deletions")
    assert done.code == 0, done.out + done.err
    assert az.members(USER) == []
    assert az.members(READERS) == []
    assert az.members(ADMIN) == ["alice"]


def test_b2b_guests_are_invited_once_and_added(az: AzProject) -> None:
    az.driver_extra = {"b2bGuestInvitation": {"enabled": True}}
    az.write_config()
    az.write_inventory(
        az.inventory(extra=[user("zoe", "zoe"), binding("finance", "ledger", "reader", "zoe")])
    )
    plan = az.cli("plan")
    assert plan.out.count("+ ensure user zoe@example.com") == 1
    assert "USER_NOT_FOUND" not in plan.out
    az.converge()
    guest = az.azure.user_by_mail("zoe@example.com")
    assert guest is not None
    assert guest["userType"] == "Guest"
    assert guest["id"] in az.azure.members(az.group(READERS))
    assert [i["sendInvitationMessage"] for i in az.azure.state.invitations] == [False]
    again = az.cli("plan", "--detailed-exitcode")
    assert again.code == 0, again.out
    az.converge()
    assert len(az.azure.state.invitations) == 1


def test_an_invited_guest_no_binding_needs_is_deleted_after_the_grace_period(az: AzProject) -> None:
    """deprovisionCreatedUsers: zoe, invited by the replicator, goes once unbound for a day; the
    directory's own users are never touched."""
    from sqlalchemy import text

    az.driver_extra = {"b2bGuestInvitation": {"enabled": True}}
    az.platform_extra = {"deprovisionCreatedUsers": {"enabled": True, "gracePeriod": "1d"}}
    az.write_config()
    zoe = [user("zoe", "zoe"), binding("finance", "ledger", "reader", "zoe")]
    az.write_inventory(az.inventory(extra=zoe))
    az.converge()
    guest = az.azure.user_by_mail("zoe@example.com")
    assert guest is not None
    az.write_inventory(az.inventory(extra=[user("zoe", "zoe")]))
    az.converge()
    assert az.azure.user_by_mail("zoe@example.com") is not None, "within the grace period"
    with az.store() as store, store.engine.begin() as conn:
        conn.execute(text("UPDATE created_users SET unneeded_since = '2020-01-01 00:00:00+00:00'"))
    r = az.cli("reconcile", "--all")
    assert r.code == 0, r.out + r.err
    assert f"- deleted user zoe@example.com (id {guest['id']})" in r.out
    assert az.azure.user_by_mail("zoe@example.com") is None
    assert guest["id"] in az.azure.state.deleted_users, "restorable among the deleted items"
    assert az.azure.user_by_mail("alice@example.com") is not None
    assert az.cli("plan", "--detailed-exitcode").code == 0


def test_throttling_short_waits_converge_a_long_one_fails_only_that_run(az: AzProject) -> None:
    az.azure.throttle("GET", "^/v1.0/users$", count=1, retry_after="0.05")
    az.azure.throttle("PUT", "roleAssignments", count=2, status=503, retry_after="0.05")
    az.converge()
    assert az.roles(ADMIN) == [OWNER]

    az.write_inventory(
        az.inventory({"admin": ("alice", "erin"), "user": ("bob", "carol"), "reader": ("dave",)})
    )
    az.azure.throttle("POST", r"/members/\$ref$", count=1, retry_after="3600")
    r = az.cli("reconcile", "--all")
    assert r.code == 1
    assert "retry after 3600" in r.out + r.err
    assert az.members(ADMIN) == ["alice"]
    az.converge()
    assert az.members(ADMIN) == ["alice", "erin"]


def assert_no_duplicates(az: AzProject) -> None:
    """Every group name once: no run created a second group under the lag."""
    groups = az.azure.groups()
    assert groups, "no groups at all"
    assert {name: len(ids) for name, ids in groups.items() if len(ids) > 1} == {}


def test_a_new_landing_zone_converges_with_the_lag_on_within_the_run(az: AzProject) -> None:
    az.converge("--wait-pending", "0")  # within the run: no requeue needed for a short lag
    assert_no_duplicates(az)
    assert az.members(USER) == ["bob", "carol"]
    assert az.roles(READERS) == [READER]
    assert az.azure.count("graph", "POST", r"/members/\$ref$") > 5  # new groups unknown at first
    az.assert_converged()


def test_no_duplicate_group_under_a_long_read_lag_two_runs_in_a_row(az: AzProject) -> None:
    """Graph lags its writes by minutes: the run that created the groups cannot add members
    (pending), and the next run, which cannot see the groups yet, must not take them for gone and
    create them again: it is pending as well. Once Graph has caught up, one run converges."""
    az.azure.lag = az.azure.arm_lag = 3600  # until catch_up()
    for _ in range(2):
        r = az.cli("reconcile", "--all", "--wait-pending", "0")
        assert r.code == 1, r.out + r.err
        assert f"{LEDGER}: PENDING (platform)" in r.out
        assert "FAILED" not in r.out
        assert_no_duplicates(az)
    assert len(az.azure.groups()) == 6
    with az.store() as store:
        runs = {run.tenant: run.outcome for run in store.last_runs()}
        assert runs[LEDGER] == "pending"
        assert [w.code for w in store.open_warnings(LEDGER)] == ["PLATFORM_PENDING"]
    az.azure.catch_up()
    az.converge("--wait-pending", "0")
    assert_no_duplicates(az)
    assert az.members(USER) == ["bob", "carol"]
    with az.store() as store:
        assert store.open_warnings(LEDGER) == []
    az.assert_converged()


def test_arm_lag_longer_than_the_run_is_pending_not_failed(az: AzProject) -> None:
    """ARM does not know the new groups for minutes (PrincipalNotFound): past the in-run retries
    the tenant is PENDING (PLATFORM_PENDING), not failed; the members are in, the roles wait. The
    next run after the lag converges."""
    az.azure.arm_lag = 3600
    r = az.cli("reconcile", "--all", "--wait-pending", "0")
    assert r.code == 1, r.out + r.err
    assert f"{LEDGER}: PENDING (platform)" in r.out
    assert "PrincipalNotFound" in r.out
    assert "FAILED" not in r.out
    assert az.members(USER) == ["bob", "carol"]
    assert az.roles(USER) == []
    with az.store() as store:
        assert [w.code for w in store.open_warnings(LEDGER)] == ["PLATFORM_PENDING"]
    az.azure.catch_up()
    az.converge("--wait-pending", "0")
    assert az.roles(USER) == [CONTRIBUTOR]
    assert_no_duplicates(az)
    az.assert_converged()


def test_reconcile_waits_for_pending_tenants_and_exits_zero(az: AzProject) -> None:
    """``--wait-pending``: tenants ARM has not caught up with run again after their delay, until
    they converge; the reconcile exits 0."""
    az.azure.arm_lag = 4.0
    done = az.converge("--wait-pending", "120")
    assert "PENDING" not in done.out
    assert az.roles(ADMIN) == [OWNER]
    assert az.roles("finance.payroll-admin", "payroll") == [OWNER]
    assert az.azure.count("arm", "PUT") > 6  # PrincipalNotFound before ARM knew the groups
    assert_no_duplicates(az)


def test_role_names_instead_of_ids_are_a_validation_error(az: AzProject) -> None:
    az.mappings["reader"] = ["Reader"]
    az.write_config()
    r = az.cli("validate")
    assert r.code == 1
    assert "'Reader' is not a role id this platform accepts" in r.out + r.err


def test_no_op_reconcile_costs(az: AzProject) -> None:
    """A converged tenant costs one groups request (existence and marker of up to 15 owned groups),
    list_members per owned group and ONE list of the scope's role assignments (G + 2: G + 1 Graph,
    1 ARM); with a cold lookup cache, one batched users request per 15 euids."""
    az.converge()
    az.azure.requests.clear()
    driver = no_op_driver(az, AzureDriver)  # lookup cache warm (the converge filled it)
    # two tenants with 3 groups each: 5 calls per tenant, 4 of them Graph
    assert dict(driver.api_calls) == {"list_groups": 2, "list_members": 6, "list_role_assignments": 2}
    assert az.azure.count("graph") == 8
    assert az.azure.count("arm") == 2

    az.replication["lookupCacheTtl"] = 0
    az.write_config()
    driver = no_op_driver(az, AzureDriver)  # cold: 5 euids in one users request
    assert driver.api_calls["list_users"] == 1
    assert driver.api_calls.total() == 11


def test_explain_names_the_lookup_attribute(az: AzProject) -> None:
    az.replication["aadUserLookupStrategy"] = "UserByUsernameLookupStrategy"
    az.write_config()
    r = az.cli("explain", "--tenant", LEDGER, "--user", "bob")
    assert r.code == 0, r.err
    assert "userPrincipalName" in r.out
    assert "bob@example.com" in r.out


def test_the_example_reconciles_against_the_server(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    azure_server: AzureServer,
) -> None:
    """examples/azure as a user would adapt it: only each azure block's endpoints and credentials
    point at the local server (scope, administrative unit and B2B settings stay as written)."""
    monkeypatch.setenv("AZURE_TEST_SECRET", CLIENT_SECRET)
    azure_server.reset()
    azure_server.lag, azure_server.arm_lag = LAG, ARM_LAG
    example = Example.copy("azure", tmp_path, capsys)
    for platform in example.config["platforms"]:
        local = azure_server.driver_options()
        platform["azure"].update(
            {
                k: local[k]
                for k in ("tenantId", "credentials", "graphUrl", "armUrl", "authorityHost", "caFile")
            }
        )
    example.save()
    alice = azure_server.add_user("alice@example.com")  # bob is invited as a guest

    cli = example.cli

    assert cli("validate").code == 0
    done = cli("reconcile", "--all")
    assert done.code == 0, done.out + done.err
    bob = azure_server.user_by_mail("bob@example.com")
    assert bob is not None
    assert bob["userType"] == "Guest"
    payroll = azure_server.group_id("finance.payroll-admin")
    assert sorted(azure_server.members(payroll)) == sorted([alice, bob["id"]])
    assert azure_server.roles(payroll, "/subscriptions/4b2a3c5d-6e7f-4a81-9b0c-1d2e3f4a5b6c") == [
        "b24988ac-6180-42a0-ab88-20f7382dd24c"  # the restricted landing zone: Contributor
    ]
    playground = azure_server.group_id("rg-playground-user")
    rg = "/subscriptions/22222222-2222-2222-2222-222222222222/resourceGroups/rg-finance-playground"
    assert azure_server.roles(playground, rg) == ["b24988ac-6180-42a0-ab88-20f7382dd24c"]
    # The sandbox invites nobody: bob is found there once the workload platform has invited him
    # (a user not found is asked again on the next run).
    again = cli("reconcile", "--all")
    assert again.code == 0, again.out + again.err
    assert azure_server.members(playground) == [bob["id"]]
    assert len(azure_server.state.invitations) == 1
    assert cli("plan", "--detailed-exitcode").code == 0


def test_a_refused_secret_fails_the_run_without_showing_it(
    az: AzProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_TEST_SECRET", "not-the-secret-0815")
    r = az.cli("reconcile", "--all")
    assert r.code == 1
    assert "cannot sign in" in r.out + r.err
    assert "AADSTS7000215" in r.out + r.err
    assert "not-the-secret-0815" not in r.out + r.err
    assert az.azure.groups() == {}
    monkeypatch.setenv("AZURE_TEST_SECRET", CLIENT_SECRET)
    done = az.converge()
    assert CLIENT_SECRET not in done.out + done.err


def test_roles_written_as_full_arm_ids_converge(az: AzProject) -> None:
    sub = SUBS["ledger"]
    full = f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{READER.upper()}"
    az.converge()  # READER granted as a GUID
    az.mappings["reader"] = [full]  # the same role definition, now spelled as an ARM id
    az.write_config()
    az.converge()
    assert az.roles(READERS) == [READER]
    assert az.cli("plan", "--detailed-exitcode").code == 0


async def test_the_daemon_requeues_a_pending_tenant_without_backoff_and_clears_the_warning(
    az: AzProject,
) -> None:
    """In the daemon a tenant ARM has not caught up with ends pending: requeued after the delay
    the driver gives (no failure, no backoff, counted in replicator_requeues_total, "pending" in
    the status), and once ARM knows the groups it converges and the warning clears."""
    az.azure.arm_lag = 3600
    daemon = Daemon(config_path=az.config_path, listen=("127.0.0.1", 0), workers=2, watch_interval=0.1)
    samples = daemon.metrics.registry

    async def until(check: Callable[[], bool], within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while not check():
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.05)

    def requeues() -> float:
        return samples.get_sample_value("replicator_requeues_total", {"platform": PLATFORM}) or 0.0

    await daemon.start()
    try:
        await until(lambda: requeues() >= 2)  # pending, requeued after the delay, pending again
        state = daemon.tenants[LEDGER]
        assert state.last is not None
        assert isinstance(state.last.outcome, Requeue)
        assert state.failures == 0, "pending is not a failure: no backoff"
        assert not samples.get_sample_value(
            "replicator_errors_total", {"platform": PLATFORM, "kind": "platform"}
        )
        with az.store() as store:
            assert [w.code for w in store.open_warnings(LEDGER)] == ["PLATFORM_PENDING"]
        doc = status_doc("r", None, 0, daemon.tenants, None)
        assert {t["tenant"]: t["outcome"] for t in doc["tenants"]}[LEDGER] == "pending"

        az.azure.catch_up()
        await until(
            lambda: (last := daemon.tenants[LEDGER].last) is not None and last.ok and not last.pending
        )
        assert az.roles(USER) == [CONTRIBUTOR]
        with az.store() as store:
            assert store.open_warnings(LEDGER) == []
    finally:
        await daemon.stop()
    assert_no_duplicates(az)
