"""The CLI end to end against the local Cloud Foundry v3 / UAA server: reconcile, removal of a
binding, unmanaged roles kept, a user not found, two aliases mapping the same role type, a role
deleted by hand, a rename, and the API calls of a no-op reconcile. Results are read back from the
server's state (``CfServer.space_roles``/``org_roles``), never through the driver."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from platforms.cloudfoundry import CloudFoundryDriver
from tests.e2e.harness import PEOPLE, E2EProject, Example, PlatformSpec, binding, no_op_driver, user
from tests.support.cf_server import CLIENT_SECRET, SECRET_ENV, CfServer

pytestmark = pytest.mark.integration

PLATFORM = "cf.test"
ZONE = "cf-default"
LEDGER = f"finance/ledger/{PLATFORM}"
DEV, MGR, AUD = "space_developer", "space_manager", "space_auditor"
ORG_USER = "organization_user"


@dataclass(kw_only=True)
class CfProject(E2EProject):
    """The Cloud Foundry project, against the CF server: one org, a space per project."""

    spec = PlatformSpec(
        PLATFORM, "cloudfoundry", ZONE, {"admin": (MGR, DEV), "user": (DEV,), "reader": (AUD,)}
    )
    server: CfServer
    org: str = ""

    @property
    def spaces(self) -> dict[str, str]:
        return self.local_ids

    def driver_options(self) -> dict[str, Any]:
        return self.server.driver_options(**self.driver_extra)

    def roles(self, prj: str = "ledger") -> list[tuple[str, str]]:
        """(user, role type) in the project's space, ``@example.com`` cut."""
        return [(u.removesuffix("@example.com"), t) for u, t in self.server.space_roles(self.spaces[prj])]

    def org_users(self) -> list[str]:
        return [u.removesuffix("@example.com") for u, t in self.server.org_roles(self.org) if t == ORG_USER]


@pytest.fixture(scope="module")
def cf_server() -> Iterator[CfServer]:
    with CfServer() as server:
        yield server


@pytest.fixture
def cf(
    tmp_path: Path, cf_server: CfServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> CfProject:
    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)
    cf_server.reset()
    p = CfProject(root=tmp_path, capsys=capsys, server=cf_server)
    p.org = cf_server.add_org("finance")
    # As the real service behaves: the client is org manager of its org only (it reads users with
    # a role there; the users below have none yet, so GET /v3/users lists none of them and the
    # first reconcile ensures them), and role deletion jobs take half a second.
    cf_server.world.caller_orgs = {p.org}
    cf_server.world.job_lag = 0.5
    p.local_ids = {prj: cf_server.add_space(p.org, prj) for prj in ("ledger", "payroll")}
    p.users = {n: cf_server.add_user(f"{n}@example.com") for n in PEOPLE}
    p.write_config()
    p.write_inventory(p.inventory())
    return p


LEDGER_ROLES = [("alice", DEV), ("alice", MGR), ("bob", DEV), ("carol", DEV), ("dave", AUD)]


def test_full_reconcile_then_nothing_left(cf: CfProject) -> None:
    before = cf.plan_exit(2)
    assert "+ grant space_manager to finance.ledger-admin" in before.out
    assert cf.server.space_roles(cf.spaces["ledger"]) == [], "plan must not write to the platform"

    cf.converge()
    assert cf.roles() == LEDGER_ROLES
    assert cf.roles("payroll") == [("erin", DEV), ("erin", MGR)]
    assert cf.org_users() == ["alice", "bob", "carol", "dave", "erin"]
    records = {g.name: g for g in cf.store().owned_groups(PLATFORM, LEDGER)}
    assert records["finance.ledger-user"].platform_id == f"{cf.spaces['ledger']}/finance.ledger-user"

    cf.assert_converged()


def test_removed_binding_removes_the_role_but_not_the_org_user(cf: CfProject) -> None:
    r = cf.replan(user=("bob",))
    assert "- remove member carol@example.com from finance.ledger-user" in r.out
    cf.converge()
    assert cf.roles() == [("alice", DEV), ("alice", MGR), ("bob", DEV), ("dave", AUD)]
    assert "carol" in cf.org_users(), "organization_user is never removed"
    assert cf.cli("plan", "--detailed-exitcode").code == 0


def test_unmanaged_roles_are_kept(cf: CfProject) -> None:
    cf.converge()
    ledger = cf.spaces["ledger"]
    # Given by hand: erin (in no ledger binding) and a manager role for bob.
    cf.server.add_role(ORG_USER, cf.users["erin"], org=cf.org)
    cf.server.add_role(DEV, cf.users["erin"], space=ledger)
    cf.server.add_role(MGR, cf.users["bob"], space=ledger)
    assert cf.cli("plan", "--detailed-exitcode").code == 0
    cf.write_inventory(cf.inventory({"admin": ("alice",), "user": ("carol",), "reader": ("dave",)}))
    cf.converge()
    assert ("erin", DEV) in cf.roles()
    assert ("bob", MGR) in cf.roles(), "a role the replicator never gave stays"
    assert ("bob", DEV) not in cf.roles(), "the role the replicator gave goes with the binding"


def test_a_user_not_found_is_a_warning_and_the_rest_is_applied(cf: CfProject) -> None:
    cf.driver_extra["ensureUsers"] = False
    cf.server.world.caller_orgs = None  # an admin reads every user: nobody else is missing
    cf.write_config()
    zoe = [user("zoe", "zoe"), binding("finance", "ledger", "reader", "zoe")]
    cf.write_inventory(cf.inventory(extra=zoe))
    r = cf.converge()
    assert "USER_NOT_FOUND" in r.out + r.err
    assert cf.roles() == LEDGER_ROLES
    status = cf.cli("status", "-o", "json").json()
    ledger = next(t for t in status["tenants"] if t["tenant"] == LEDGER)
    assert [(w["code"], w["subject"]) for w in ledger["warnings"]] == [("USER_NOT_FOUND", "zoe")]
    cf.server.add_user("Zoe@Example.com")  # appears later, spelled differently
    cf.converge()
    assert ("Zoe@Example.com", AUD) in cf.server.space_roles(cf.spaces["ledger"])


def test_two_aliases_granting_the_same_role_type(cf: CfProject) -> None:
    cf.write_inventory(cf.inventory({"admin": ("alice",), "user": ("alice", "bob"), "reader": ()}))
    cf.converge()
    assert cf.roles() == [("alice", DEV), ("alice", MGR), ("bob", DEV)]
    cf.write_inventory(cf.inventory({"admin": ("alice",), "user": ("bob",), "reader": ()}))
    cf.converge()
    assert cf.roles() == [("alice", DEV), ("alice", MGR), ("bob", DEV)], "admin still grants developer"
    cf.write_inventory(cf.inventory({"admin": ("bob",), "user": ("bob",), "reader": ()}))
    cf.converge()
    assert cf.roles() == [("bob", DEV), ("bob", MGR)]
    assert cf.cli("plan", "--detailed-exitcode").code == 0


def test_a_role_deleted_by_hand_is_recreated(cf: CfProject) -> None:
    cf.converge()
    cf.server.delete_role(MGR, "alice@example.com", cf.spaces["ledger"])
    r = cf.cli("plan", "--detailed-exitcode")
    assert r.code == 2
    assert "+ add member alice@example.com to finance.ledger-admin" in r.out
    cf.converge()
    assert cf.roles() == LEDGER_ROLES
    assert cf.cli("plan", "--detailed-exitcode").code == 0


def test_a_user_who_lost_a_role_and_the_binding_loses_every_role(cf: CfProject) -> None:
    cf.converge()
    cf.server.delete_role(MGR, "alice@example.com", cf.spaces["ledger"])
    cf.write_inventory(cf.inventory({"admin": (), "user": ("bob", "carol"), "reader": ("dave",)}))
    r = cf.cli("plan")
    assert "- remove member alice@example.com from finance.ledger-admin" in r.out
    cf.converge()
    assert cf.roles() == LEDGER_ROLES[2:]
    assert cf.cli("plan", "--detailed-exitcode").code == 0


def test_role_mapping_change_and_pattern_rename(cf: CfProject) -> None:
    cf.converge()
    cf.mappings["reader"] = ["space_supporter"]
    cf.write_config()
    cf.converge()
    assert ("dave", "space_supporter") in cf.roles()
    assert ("dave", AUD) not in cf.roles()
    deletes = cf.server.calls("DELETE", r"/v3/roles/.*")
    cf.rename_dashed()
    plan = cf.cli("plan")
    assert "- revoke space_developer from finance.ledger-user" in plan.out
    cf.converge()
    assert cf.server.calls("DELETE", r"/v3/roles/.*") == deletes, "nobody lost a role in the rename"
    assert cf.roles() == [*LEDGER_ROLES[:4], ("dave", "space_supporter")]
    names = sorted(g.name for g in cf.store().owned_groups(PLATFORM, LEDGER))
    assert names == ["finance-ledger-admin", "finance-ledger-reader", "finance-ledger-user"]
    assert cf.cli("plan", "--detailed-exitcode").code == 0


def test_throttled_role_creation_is_retried(cf: CfProject) -> None:
    # CF's rate limiter: Retry-After holds the reset time in epoch seconds, as X-RateLimit-Reset does
    cf.server.throttle_next("POST", "/v3/roles", reset_in=0.5)
    cf.server.throttle_next("POST", "/v3/roles", reset_in=0.5, retry_after=False)
    cf.server.fail_next("GET", "/v3/spaces/.*", 503)
    cf.converge()
    assert cf.server.world.faults == [], "every error was answered"
    assert cf.roles() == LEDGER_ROLES


def test_a_new_landing_zone_whose_users_never_logged_in_converges(cf: CfProject) -> None:
    """SSO users UAA knows but the Cloud Controller does not (never logged in): invisible to
    GET /v3/users, they get the org role by username + origin, then their space roles, in one
    run; the next run finds them under the same guid and has nothing to do."""
    cf.server.reset()
    cf.org = cf.server.add_org("finance")
    cf.server.world.caller_orgs = {cf.org}
    cf.server.world.job_lag = 0.5
    cf.local_ids = {prj: cf.server.add_space(cf.org, prj) for prj in ("ledger", "payroll")}
    cf.users = {n: cf.server.add_uaa_user(f"{n}@example.com", origin="corp-idp") for n in PEOPLE}
    cf.driver_extra["origin"] = "corp-idp"
    cf.write_config()
    cf.write_inventory(cf.inventory())
    plan = cf.plan_exit(2)
    assert "+ ensure user alice@example.com" in plan.out
    assert "USER_NOT_FOUND" not in plan.out + plan.err
    r = cf.converge()
    assert "USER_NOT_FOUND" not in r.out + r.err
    assert cf.roles() == LEDGER_ROLES
    assert cf.org_users() == ["alice", "bob", "carol", "dave", "erin"]
    members = {m for g in cf.store().owned_groups(PLATFORM, LEDGER) for m in g.members}
    assert members == {cf.users[n] for n in ("alice", "bob", "carol", "dave")}, "UAA's guids"
    cf.assert_converged()
    cf.converge()
    assert cf.roles() == LEDGER_ROLES, "no role twice"


def test_a_user_uaa_does_not_know_is_not_found_and_the_others_get_access(cf: CfProject) -> None:
    """A bound user nobody knows (not listed, and UAA refuses the role by username) is reported
    USER_NOT_FOUND, naming why; everyone else's roles are applied, and the tenant is not failed."""
    zoe = [user("zoe", "zoe"), binding("finance", "ledger", "reader", "zoe")]
    cf.write_inventory(cf.inventory(extra=zoe))
    r = cf.cli("reconcile", "--all", "--fail-on-warnings")
    assert r.code == 3, r.out + r.err
    assert "USER_NOT_FOUND" in r.out
    assert "UAA has no user 'zoe@example.com' in origin 'uaa'" in r.out
    assert "must log in once" in r.out
    assert "FAILED" not in r.out
    assert cf.roles() == LEDGER_ROLES
    (warning,) = [w for w in cf.store().open_warnings(LEDGER) if w.code == "USER_NOT_FOUND"]
    assert warning.subject == "zoe"


def test_a_saved_plan_is_refused_when_cloud_foundry_changed(cf: CfProject) -> None:
    cf.converge()
    cf.write_inventory(cf.inventory({"admin": ("alice",), "user": ("bob",), "reader": ("dave",)}))
    path = cf.root / "plan.json"
    assert cf.cli("plan", "--out", str(path), "--detailed-exitcode").code == 2
    cf.server.delete_role(AUD, "dave@example.com", cf.spaces["ledger"])  # by hand, in between
    refused = cf.cli("apply", str(path))
    assert refused.code == 1
    assert ("carol", DEV) in cf.roles(), "nothing may be applied from a stale plan"
    assert cf.cli("plan", "--out", str(path), "--detailed-exitcode").code == 2
    done = cf.cli("apply", str(path))
    assert done.code == 0, done.out + done.err
    assert cf.roles() == [("alice", DEV), ("alice", MGR), ("bob", DEV), ("dave", AUD)]


def test_tenant_deletion_removes_every_role_it_gave(cf: CfProject) -> None:
    cf.converge()
    cf.server.add_role(AUD, cf.users["erin"], space=cf.spaces["ledger"])  # not ours
    docs = cf.inventory()
    for doc in docs:
        if doc["kind"] == "meshTenant" and doc["spec"]["localId"] == cf.spaces["ledger"]:
            doc["spec"]["deleted"] = True
    cf.write_inventory(docs)
    cf.converge()
    assert cf.roles() == [("erin", AUD)]
    assert cf.roles("payroll") == [("erin", DEV), ("erin", MGR)]


def test_no_op_reconcile_makes_one_call_per_tenant(cf: CfProject) -> None:
    """With the lookup cache warm, a converged tenant costs one list of its space's roles."""
    cf.converge()  # ensures the users GET /v3/users did not list, and caches the guids CF gave them
    driver = no_op_driver(cf, CloudFoundryDriver)
    # two tenants: one list_roles each, plus the one token of the run
    assert dict(driver.api_calls) == {"uaa_token": 1, "list_roles": 2}


def test_the_example_reconciles_against_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cf_server: CfServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/cloudfoundry as a user would adapt it: only the endpoint and secret change."""
    cf_server.reset()
    example = Example.copy("cloudfoundry", tmp_path, capsys)
    (platform,) = example.config["platforms"]
    block = platform["cloudfoundry"]
    block.update(apiUrl=cf_server.url, uaaUrl=None, clientId=cf_server.driver_options()["clientId"])
    example.save()
    monkeypatch.setenv(block["clientSecret"]["env"], CLIENT_SECRET)
    org = cf_server.add_org("finance", guid=block["orgGuid"])
    tenants = {
        d["metadata"]["ownedByProject"]: d["spec"]["localId"]
        for d in yaml.safe_load_all((example.root / "inventory" / "org.yaml").read_text())
        if d["kind"] == "meshTenant"
    }
    spaces = {prj: cf_server.add_space(org, prj, guid=guid) for prj, guid in tenants.items()}
    for name in ("alice", "bob", "carol"):
        cf_server.add_user(f"{name}@example.com")

    cli = example.cli

    assert cli("validate").code == 0
    done = cli("reconcile", "--all")
    assert done.code == 0, done.out + done.err
    assert cf_server.space_roles(spaces["ledger"]) == [
        ("alice@example.com", DEV),
        ("bob@example.com", DEV),
    ]
    assert cf_server.space_roles(spaces["payroll"]) == [
        ("alice@example.com", DEV),
        ("alice@example.com", MGR),
        ("bob@example.com", AUD),
        ("carol@example.com", AUD),
    ]
    assert cli("plan", "--detailed-exitcode").code == 0
