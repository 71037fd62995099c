"""The CLI end to end against a real moto server: plan, reconcile, status, and the safety rules.
Results are read back from moto with plain boto3, never through the driver."""

from __future__ import annotations

import json

from platforms.aws import AwsDriver
from platforms.kit import OWNER_MARKER
from tests.e2e.conftest import ACCOUNTS, PLATFORM, Project, binding, standard_inventory, tenant, user
from tests.e2e.harness import no_op_driver

LEDGER = f"finance/ledger/{PLATFORM}"
ADMIN, USER, READER = "mst-finance.ledger-admin", "mst-finance.ledger-user", "mst-finance.ledger-reader"


def test_plan_then_reconcile_then_nothing_left(proj: Project) -> None:
    before = proj.plan_exit(2)
    assert "+ create group mst-finance.ledger-admin" in before.out
    assert "+ add member alice@example.com to mst-finance.ledger-admin" in before.out
    assert before.out.rstrip().endswith("Plan: 10 to add, 0 to remove, 0 warnings.")
    assert proj.aws.groups() == {}, "plan must not write to the platform"

    proj.converge()
    assert proj.member_names(ADMIN) == ["alice"]
    assert proj.member_names(USER) == ["bob", "carol"]
    assert proj.member_names(READER) == ["dave"]
    acct = ACCOUNTS["ledger"]
    assert proj.aws.assignments(acct, proj.ps["admin"]) == [("GROUP", proj.group(ADMIN))]
    assert proj.aws.assignments(acct, proj.ps["user"]) == [("GROUP", proj.group(USER))]
    assert proj.aws.assignments(acct, proj.ps["reader"]) == [("GROUP", proj.group(READER))]
    assert all(d and d.startswith(OWNER_MARKER) for d in proj.aws.group_descriptions().values())

    proj.assert_converged()


def test_repeated_runs_create_no_duplicates(proj: Project) -> None:
    """moto would store a second membership or assignment; the driver checks first, like AWS refuses."""
    for _ in range(3):
        proj.converge()
    assert sorted(proj.aws.groups()) == [ADMIN, READER, USER]
    for name in (ADMIN, USER, READER):
        assert proj.aws.group_count(name) == 1
        members = proj.aws.members(proj.group(name))
        assert len(members) == len(set(members))
    for role in ("admin", "user", "reader"):
        assert len(proj.aws.assignments(ACCOUNTS["ledger"], proj.ps[role])) == 1


def test_plan_json_shape(proj: Project) -> None:
    r = proj.cli("plan", "-o", "json")
    assert r.code == 0
    doc = r.json()
    assert doc["formatVersion"] == 1
    assert doc["summary"] == {"add": 10, "remove": 0, "warnings": 0}
    (t,) = doc["tenants"]
    assert t["tenant"] == LEDGER
    assert t["fingerprint"].startswith("sha256:")
    actions = [c["action"] for c in t["changes"]]
    assert actions == ["create_group"] * 3 + ["add_member"] * 4 + ["grant"] * 3
    add = next(c for c in t["changes"] if c["action"] == "add_member" and c["group"] == ADMIN)
    assert add == {
        "action": "add_member",
        "group": ADMIN,
        "alias": "admin",
        "platformUser": "alice@example.com",
        "platformUserId": proj.users["alice"],
        "euid": "alice@example.com",
    }
    grant = next(c for c in t["changes"] if c["action"] == "grant" and c["group"] == ADMIN)
    assert grant == {"action": "grant", "group": ADMIN, "alias": "admin", "role": proj.ps["admin"]}


def test_plan_out_file_and_warning_exit_code(proj: Project) -> None:
    proj.write_inventory(
        [*standard_inventory(), user("zoe", "zoe"), binding("finance", "ledger", "reader", "zoe")]
    )
    out = proj.root / "plan.json"
    r = proj.cli("plan", "-o", "json", "--out", str(out), "--fail-on-warnings", "--detailed-exitcode")
    assert r.code == 3, "warnings win over pending changes when --fail-on-warnings is given"
    saved = json.loads(out.read_text())
    assert set(saved.pop("artifact")) == {"createdAt", "allowDeletions", "inputs", "observed"}
    assert saved == r.json(), "the plan file is the printed plan plus its artifact section"
    (w,) = r.json()["tenants"][0]["warnings"]
    assert (w["code"], w["user"], w["euid"]) == ("USER_NOT_FOUND", "zoe", "zoe")


def test_foreign_group_with_our_name_is_left_alone(proj: Project) -> None:
    foreign = proj.aws.create_group(ADMIN, "made by hand")
    proj.aws.add_member(foreign, proj.users["erin"])
    r = proj.cli("reconcile", "--all")
    assert r.code == 0, r.err
    assert "FOREIGN_GROUP_NAME_TAKEN" in r.out
    assert proj.aws.group_count(ADMIN) == 1
    assert proj.aws.members(foreign) == [proj.users["erin"]]
    assert proj.aws.group_descriptions()[ADMIN] == "made by hand"
    assert proj.aws.assignments(ACCOUNTS["ledger"], proj.ps["admin"]) == []
    assert proj.member_names(USER) == ["bob", "carol"]
    status = proj.cli("status", "-o", "json").json()
    codes = [w["code"] for w in status["tenants"][0]["warnings"]]
    assert codes == ["FOREIGN_GROUP_NAME_TAKEN"]


def test_pattern_change_renames_make_before_break(proj: Project) -> None:
    proj.converge()
    old_ids = {n: proj.group(n) for n in (ADMIN, USER, READER)}
    proj.rename_dashed()

    plan = proj.cli("plan", "-o", "json").json()["tenants"][0]["changes"]
    assert [c["action"] for c in plan] == (
        ["create_group"] * 3 + ["add_member"] * 4 + ["grant"] * 3 + ["revoke"] * 3 + ["delete_group"] * 3
    )
    proj.converge()
    groups = proj.aws.groups()
    assert sorted(groups) == [
        "mst-finance-ledger-admin",
        "mst-finance-ledger-reader",
        "mst-finance-ledger-user",
    ]
    assert proj.member_names("mst-finance-ledger-user") == ["bob", "carol"]
    acct = ACCOUNTS["ledger"]
    assert proj.aws.assignments(acct, proj.ps["admin"]) == [("GROUP", groups["mst-finance-ledger-admin"])]

    # Nobody lost access in between: per alias, the new group was created, filled and granted
    # before the old group's grant was revoked and the group deleted.
    last_run = proj.store().last_runs(LEDGER)[0].id
    trail = [a for a in proj.store().audit_trail(LEDGER) if a.outcome == "applied" and a.run_id == last_run]
    position = {(a.action, a.group_name, a.subject): i for i, a in enumerate(trail)}
    for alias, old in (("admin", ADMIN), ("user", USER), ("reader", READER)):
        new = f"mst-finance-ledger-{alias}"
        last_add = max(
            i for (act, g, _), i in position.items() if g == new and act in ("add_member", "grant")
        )
        first_remove = min(i for (act, g, _), i in position.items() if g == old)
        assert last_add < first_remove
    assert all(g not in proj.aws.groups() for g in old_ids)
    assert proj.cli("plan", "--detailed-exitcode").code == 0


def test_removed_binding_removes_member(proj: Project) -> None:
    proj.converge()
    proj.write_inventory(standard_inventory(admin=("alice",), user=("bob",), reader=("dave",)))
    r = proj.cli("plan", "-o", "json")
    changes = r.json()["tenants"][0]["changes"]
    assert changes == [
        {
            "action": "remove_member",
            "group": USER,
            "alias": "user",
            "platformUser": "carol@example.com",
            "platformUserId": proj.users["carol"],
        }
    ]
    proj.converge()
    assert proj.member_names(USER) == ["bob"]


def test_empty_desired_state_trips_the_guard(proj: Project) -> None:
    proj.converge()
    proj.write_inventory(standard_inventory(admin=(), user=(), reader=()))  # every binding gone
    r = proj.cli("reconcile", "--all")
    assert r.code == 1
    assert "DELETION_GUARD" in r.out
    assert "--allow-deletions" in r.out
    assert proj.member_names(ADMIN) == ["alice"]
    assert proj.member_names(USER) == ["bob", "carol"]
    assert proj.member_names(READER) == ["dave"]
    assert proj.store().last_runs(LEDGER)[0].outcome == "failed"

    confirmed = proj.cli("reconcile", "--all", "--allow-deletions")
    assert confirmed.code == 0, confirmed.out
    assert [proj.aws.members(proj.group(n)) for n in (ADMIN, USER, READER)] == [[], [], []]


def test_too_many_removals_trip_the_guard(proj: Project) -> None:
    proj.converge()  # 4 memberships; 25% allows 1 removal
    proj.write_inventory(standard_inventory(admin=("alice",), user=(), reader=()))
    r = proj.cli("reconcile", "--all")
    assert r.code == 1
    assert "3 of 4 managed memberships would be removed" in r.out
    assert proj.member_names(USER) == ["bob", "carol"]


def test_empty_inventory_deletes_nothing(proj: Project) -> None:
    proj.converge()
    proj.write_inventory([])
    r = proj.cli("reconcile", "--all")
    assert r.code == 1, "the deletion guard holds every recorded tenant: a failure, not a success"
    assert "Reconciled 0 of 0 tenants" in r.out
    assert f"{LEDGER}: not reconciled: DELETION_GUARD: the inventory is empty" in r.out
    assert sorted(proj.aws.groups()) == [ADMIN, READER, USER]
    assert proj.member_names(USER) == ["bob", "carol"]


def test_one_failing_platform_does_not_stop_the_others(proj: Project) -> None:
    proj.extra_platforms = [
        {
            "identifier": "aws.down",
            "type": "aws",
            "aws": {
                "region": "eu-central-1",
                "identityStoreId": "d-0",
                "instanceArn": "arn:aws:sso:::instance/x",
                "endpointUrl": "http://127.0.0.1:9",
                "maxAttempts": 1,
            },
        }
    ]
    proj.extra_zones = [
        {
            "identifier": "down",
            "platform": "aws.down",
            "roleMappings": {
                "admin": {
                    "platformGroupAlias": "admin",
                    "platformRoles": ["arn:aws:sso:::permissionSet/ssoins-0/ps-0"],
                }
            },
        }
    ]
    proj.write_config()
    proj.write_inventory(
        [*standard_inventory(), tenant("finance", "ledger", "999", platform="aws.down", zone="down")]
    )
    plan = proj.cli("plan", "-o", "json", "--detailed-exitcode")
    assert plan.code == 1, "an error wins over pending changes"
    doc = plan.json()
    assert [e["tenant"] for e in doc["errors"]] == ["finance/ledger/aws.down"]
    assert [t["tenant"] for t in doc["tenants"]] == [LEDGER]
    r = proj.cli("reconcile", "--all")
    assert r.code == 1
    assert "finance/ledger/aws.down: FAILED" in r.out
    assert f"{LEDGER}: converged" in r.out
    assert proj.member_names(USER) == ["bob", "carol"]
    assert "Traceback" not in r.err


def test_reconcile_one_tenant_and_unknown_tenant(proj: Project) -> None:
    assert proj.cli("reconcile").code == 1
    bad = proj.cli("reconcile", "--tenant", "finance/nope/aws.eu-central-1")
    assert bad.code == 1
    assert "unknown tenant 'finance/nope/aws.eu-central-1'" in bad.err
    assert proj.cli("reconcile", "--tenant", LEDGER).code == 0
    assert proj.member_names(ADMIN) == ["alice"]


def test_dry_run_changes_nothing(proj: Project) -> None:
    r = proj.cli("reconcile", "--all", "--dry-run")
    assert r.code == 0
    assert "+ create group" in r.out
    assert proj.aws.groups() == {}
    # It says what it would do, never "converged" while changes are pending.
    assert f"{LEDGER}: would apply 10 changes (dry run, nothing applied)" in r.out
    assert "converged" not in r.out
    assert "Dry run: planned 1 of 1 tenants, 10 changes would be applied, none was" in r.out
    proj.converge()
    again = proj.cli("reconcile", "--all", "--dry-run")
    assert f"{LEDGER}: converged (dry run, nothing applied)" in again.out


def test_status_of_an_unknown_tenant_is_an_error(proj: Project) -> None:
    proj.converge()
    assert proj.cli("status", "--tenant", LEDGER).code == 0
    r = proj.cli("status", "--tenant", "finance/nope/aws.eu-central-1")
    assert r.code == 1
    assert "unknown tenant 'finance/nope/aws.eu-central-1'" in r.err


def test_audit_log_and_records_for_every_change(proj: Project) -> None:
    r = proj.cli("reconcile", "--all")
    events = [json.loads(line) for line in r.err.splitlines() if line.startswith("{")]
    audit = [e for e in events if e.get("audit")]
    applied = [e for e in audit if e["outcome"] == "applied"]
    started = [e for e in audit if e["outcome"] == "started"]
    assert len(applied) == len(started) == 10
    assert {e["tenant"] for e in applied} == {LEDGER}
    assert {"action", "group", "subject", "platform", "timestamp"} <= set(applied[0])
    rows = proj.store().audit_trail(LEDGER)
    assert [r.outcome for r in rows].count("applied") == 10
    assert "testing" not in r.err, "the AWS secret key must never reach a log line"


def test_reconcile_fail_on_warnings_exits_3_after_converging(proj: Project) -> None:
    proj.write_inventory(
        [*standard_inventory(), user("zoe", "zoe"), binding("finance", "ledger", "reader", "zoe")]
    )
    r = proj.cli("reconcile", "--all", "--fail-on-warnings")
    assert r.code == 3
    assert proj.member_names(READER) == ["dave"], "it converged before reporting the warning"
    assert proj.cli("reconcile", "--all").code == 0


def test_warnings_are_stored_and_cleared(proj: Project) -> None:
    proj.write_inventory(
        [*standard_inventory(), user("zoe", "zoe"), binding("finance", "ledger", "reader", "zoe")]
    )
    proj.converge()
    status = proj.cli("status", "-o", "json").json()["tenants"][0]
    assert [(w["code"], w["subject"]) for w in status["warnings"]] == [("USER_NOT_FOUND", "zoe")]

    proj.users["zoe"] = proj.aws.create_user("zoe@example.com")
    proj.converge()
    assert proj.member_names(READER) == ["dave", "zoe"]
    status = proj.cli("status", "-o", "json").json()["tenants"][0]
    assert status["warnings"] == []
    text = proj.cli("status")
    assert text.code == 0
    assert f"{LEDGER}  converged" in text.out


def test_crash_after_create_is_completed_next_run(proj: Project) -> None:
    """The store recorded the intent and the group was created, then the process died."""
    store = proj.store()
    store.record_group_intent(PLATFORM, LEDGER, "admin", ADMIN)
    leftover = proj.aws.create_group(ADMIN, f"{OWNER_MARKER} tenant={LEDGER}")
    run = store.start_run(LEDGER, PLATFORM, dry_run=False)
    proj.converge()
    assert proj.aws.group_count(ADMIN) == 1
    assert proj.group(ADMIN) == leftover
    assert proj.member_names(ADMIN) == ["alice"]
    runs = {r.id: r.outcome for r in proj.store().runs(LEDGER)}
    assert runs[run] == "interrupted"
    owned = {o.name: o.platform_id for o in proj.store().owned_groups(PLATFORM, LEDGER)}
    assert owned[ADMIN] == leftover


def test_deleted_tenant_loses_everything(proj: Project) -> None:
    proj.converge()
    docs = [d for d in standard_inventory() if d["kind"] != "meshTenant"]
    proj.write_inventory([*docs, tenant("finance", "ledger", ACCOUNTS["ledger"], deleted=True)])
    proj.converge()
    assert proj.aws.groups() == {}
    for role in ("admin", "user", "reader"):
        assert proj.aws.assignments(ACCOUNTS["ledger"], proj.ps[role]) == []
    assert proj.store().owned_groups(PLATFORM, LEDGER) == []
    assert proj.store().tenant_statuses()[LEDGER] == "Deleted"


def test_external_grant_on_owned_group_is_kept_on_aws(proj: Project) -> None:
    proj.converge()
    extra = proj.aws.create_permission_set("billing")
    proj.aws.assign(ACCOUNTS["ledger"], extra, proj.group(ADMIN))
    r = proj.cli("plan", "--detailed-exitcode")
    assert r.code == 0
    assert f"~ keep {extra} on {ADMIN}" in r.out

    proj.platform_extra = {"externalGrants": "remove"}
    proj.write_config()
    proj.converge()
    assert proj.aws.assignments(ACCOUNTS["ledger"], extra) == []


def test_no_op_reconcile_makes_three_calls_per_group(proj: Project) -> None:
    """With the lookup cache warm, a converged tenant costs describe_group, list_group_memberships
    and list_account_assignments_for_principal once per owned group, and nothing else."""
    proj.converge()
    driver = no_op_driver(proj, AwsDriver, tenants=1)
    assert dict(driver.api_calls) == {
        "describe_group": 3,
        "list_group_memberships": 3,
        "list_account_assignments_for_principal": 3,
    }


def test_reconcile_leaves_a_tenant_a_daemon_is_working_on(proj: Project) -> None:
    """The one-shot run takes the daemon's tenant leases: a tenant another run holds is not
    touched, the command says who holds it and exits 1; the others are reconciled."""
    from datetime import timedelta

    proj.write_config()
    with proj.store() as store:
        token = store.acquire_lease(LEDGER, "replica-0", timedelta(minutes=5))
        assert token is not None
        r = proj.cli("reconcile", "--all")
        assert r.code == 1
        assert f"{LEDGER}: FAILED (held): held by 'replica-0'" in r.out
        assert proj.aws.groups() == {}, "nothing was done with the held tenant"
        assert store.lease_holder(LEDGER) == "replica-0", "its lease is left alone"
        store.release_lease(LEDGER, "replica-0", token)
        proj.converge()
        assert store.lease_holder(LEDGER) is None, "the command released the lease it took"
        assert store.acquire_lease(LEDGER, "replica-0", timedelta(minutes=5)) is not None


def test_validate_and_reconcile_speak_json(proj: Project) -> None:
    v = proj.cli("validate", "-o", "json")
    assert v.code == 0
    assert v.json()["valid"] is True
    assert v.json()["counts"]["tenants"] == 1
    dry = proj.cli("reconcile", "--all", "--dry-run", "-o", "json")
    assert dry.code == 0
    (tenant,) = dry.json()["tenants"]
    assert (tenant["tenant"], tenant["outcome"], tenant["changesPlanned"]) == (LEDGER, "changes-planned", 10)
    done = proj.cli("reconcile", "--all", "-o", "json")
    assert done.code == 0
    (tenant,) = done.json()["tenants"]
    assert (tenant["outcome"], tenant["changesApplied"], tenant["error"]) == ("converged", 10, None)
    proj.write_inventory([{"kind": "meshUser", "metadata": {"name": "x"}, "spec": {"bogus": 1}}])
    bad = proj.cli("validate", "-o", "json")
    assert bad.code == 1
    (problem,) = bad.json()["problems"]
    assert (problem["field"], problem["message"]) == ("spec.bogus", "unknown field")
    assert isinstance(problem["line"], int)
    assert problem["file"].endswith("org.yaml")
