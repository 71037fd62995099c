"""Plan files (`plan --out` + `apply`) and offline plans (`snapshot` + `plan --observed`) end to end
against a real moto server. What happened is read back from moto and from the state store."""

from __future__ import annotations

import json
from pathlib import Path

from state import Store
from tests.e2e.conftest import ACCOUNTS, PLATFORM, Project, standard_inventory, user

LEDGER = f"finance/ledger/{PLATFORM}"
ADMIN, USER, READER = "mst-finance.ledger-admin", "mst-finance.ledger-user", "mst-finance.ledger-reader"


def converge(proj: Project) -> None:
    r = proj.cli("reconcile", "--all")
    assert r.code == 0, r.out + r.err


def applied(store: Store) -> list[tuple[str, str, str]]:
    return [(a.action, a.group_name, a.subject) for a in store.audit_trail(LEDGER) if a.outcome == "applied"]


def save_plan(proj: Project, *extra: str) -> tuple[Path, dict[str, object]]:
    path = proj.root / "plan.json"
    r = proj.cli("plan", "--out", str(path), "--detailed-exitcode", *extra)
    assert r.code == 2, r.out + r.err
    return path, json.loads(path.read_text())


def test_an_unchanged_plan_applies_exactly_its_changes(proj: Project) -> None:
    path, doc = save_plan(proj)
    (t,) = doc["tenants"]  # type: ignore[index]
    planned = [(c["action"], c["group"], c.get("platformUser") or c.get("role") or "") for c in t["changes"]]
    assert doc["artifact"]["observed"][LEDGER]["groups"] == []  # type: ignore[index]
    assert "bindings of finance/ledger" in doc["artifact"]["inputs"]  # type: ignore[index]

    r = proj.cli("apply", str(path))
    assert r.code == 0, r.out + r.err
    with proj.store() as store:
        assert applied(store) == planned
    assert proj.member_names(USER) == ["bob", "carol"]
    assert proj.aws.assignments(ACCOUNTS["ledger"], proj.ps["admin"]) == [("GROUP", proj.group(ADMIN))]
    assert proj.cli("plan", "--detailed-exitcode").code == 0


def test_a_plan_gone_stale_on_the_platform_is_refused_and_nothing_is_applied(proj: Project) -> None:
    converge(proj)
    proj.write_inventory(standard_inventory(admin=("alice",), user=("bob",), reader=("dave", "erin")))
    path, _ = save_plan(proj)
    # Someone changes a membership of an owned group between plan and apply.
    proj.aws.add_member(proj.group(USER), proj.users["erin"])
    with proj.store() as store:
        before = len(store.audit_trail(LEDGER))

    r = proj.cli("apply", str(path))
    assert r.code == 1
    assert "refused, nothing was applied" in r.err
    assert f"group {USER}: member erin@example.com added" in r.err
    assert proj.member_names(USER) == ["bob", "carol", "erin"]  # untouched, carol not removed
    assert proj.member_names(READER) == ["dave"]  # the planned addition was not made either
    with proj.store() as store:
        assert len(store.audit_trail(LEDGER)) == before


def test_a_plan_whose_inputs_changed_is_refused_naming_them(proj: Project) -> None:
    path, _ = save_plan(proj)
    proj.write_inventory(standard_inventory(admin=("alice", "erin"), user=("bob", "carol"), reader=("dave",)))

    r = proj.cli("apply", str(path))
    assert r.code == 1
    assert "the config or inventory changed since the plan was made" in r.err
    assert "bindings of finance/ledger: changed" in r.err
    assert proj.aws.groups() == {}


def test_a_plan_made_past_the_guard_applies_its_removals(proj: Project) -> None:
    converge(proj)
    proj.write_inventory(standard_inventory(admin=("alice",), user=("bob",), reader=("erin",)))
    proj.replication = {"maxDeletions": 1}
    proj.write_config()
    blocked = proj.cli("plan", "--out", str(proj.root / "p.json"))
    assert blocked.code == 1
    assert "DELETION_GUARD" in blocked.out

    path, doc = save_plan(proj, "--allow-deletions")
    assert doc["artifact"]["allowDeletions"] is True  # type: ignore[index]
    r = proj.cli("apply", str(path))
    assert r.code == 0, r.out + r.err
    assert proj.member_names(USER) == ["bob"]
    assert proj.member_names(READER) == ["erin"]


def test_files_that_are_not_plan_files_get_a_located_error(proj: Project) -> None:
    bad = proj.root / "bad.json"
    bad.write_text('{"formatVersion": 1,\n "tenants": [}\n')
    r = proj.cli("apply", str(bad))
    assert r.code == 1
    assert f"{bad}:2: not a plan file (invalid JSON" in r.err
    assert "Traceback" not in r.err

    printed = proj.root / "printed.json"
    printed.write_text(proj.cli("plan", "-o", "json").out)
    r = proj.cli("apply", str(printed))
    assert r.code == 1
    assert "not a plan file: write one with `replicator plan --out FILE`" in r.err

    r = proj.cli("apply", str(proj.root / "missing.json"))
    assert r.code == 1
    assert "cannot read the plan file" in r.err
    assert proj.aws.groups() == {}


def test_a_plan_against_a_snapshot_equals_the_live_plan(proj: Project) -> None:
    converge(proj)
    snap = proj.root / "snap.json"
    r = proj.cli("snapshot", "--out", str(snap))
    assert r.code == 0, r.err
    assert "snapshot of 1 tenants" in r.out
    # The pull request: erin joins, carol leaves.
    proj.write_inventory(standard_inventory(admin=("alice",), user=("bob", "erin"), reader=("dave",)))
    live = proj.cli("plan", "-o", "json")
    assert live.code == 0, live.err
    # No credentials and no state store: the platform block points nowhere, the store is gone.
    (proj.root / "state.db").rename(proj.root / "elsewhere.db")
    proj.platform_extra = {"aws": {**proj.aws.driver_options(), "endpointUrl": "http://127.0.0.1:9"}}
    proj.write_config()
    offline = proj.cli("plan", "-o", "json", "--observed", str(snap))
    assert offline.code == 0, offline.err
    assert not (proj.root / "state.db").exists(), "an offline plan must not open the state store"
    a, b = live.json(), offline.json()
    assert [t["changes"] for t in b["tenants"]] == [t["changes"] for t in a["tenants"]]
    assert [t["fingerprint"] for t in b["tenants"]] == [t["fingerprint"] for t in a["tenants"]]
    assert b["summary"] == a["summary"] == {"add": 1, "remove": 1, "warnings": 0}
    assert "planned against the snapshot" in offline.err


def test_snapshot_writes_to_out_and_o_is_the_output_format(proj: Project) -> None:
    converge(proj)
    snap = proj.root / "snap.json"
    r = proj.cli("snapshot", "--out", str(snap), "-o", "json")
    assert r.code == 0, r.err
    assert r.json() == {"file": str(snap), "tenants": [LEDGER]}
    assert json.loads(snap.read_text())["kind"] == "snapshot"

    # The former `-o FILE` still writes the file, with a deprecation warning.
    old = proj.root / "old.json"
    r = proj.cli("snapshot", "-o", str(old))
    assert r.code == 0, r.err
    assert f"`snapshot -o FILE` is deprecated: write `--out {old}`" in r.err
    assert json.loads(old.read_text())["tenants"].keys() == {LEDGER}

    # Refused before any platform is read (the platform is now unreachable, so reading it would be
    # a different error): no file named, a folder that does not exist, both -o and --out.
    proj.platform_extra = {"aws": {**proj.aws.driver_options(), "endpointUrl": "http://127.0.0.1:9"}}
    proj.write_config()
    for args, message in (
        ((), "the file to write is required: --out FILE"),
        (("--out", str(proj.root / "nowhere" / "s.json")), f"folder {proj.root / 'nowhere'} does not exist"),
        (("--out", str(snap), "-o", "yaml"), "-o/--output 'yaml': choose text or json (the file is --out)"),
    ):
        r = proj.cli("snapshot", *args)
        assert r.code == 1, args
        assert message in r.err, r.err
        assert "Traceback" not in r.err
        assert "could not be observed" not in r.err
    r = proj.cli("plan", "--out", str(proj.root / "nowhere" / "p.json"))
    assert r.code == 1
    assert f"folder {proj.root / 'nowhere'} does not exist" in r.err
    assert "could not be observed" not in r.err


def test_users_missing_from_the_snapshot_are_marked(proj: Project) -> None:
    converge(proj)
    snap = proj.root / "snap.json"
    assert proj.cli("snapshot", "--out", str(snap)).code == 0
    docs = standard_inventory(admin=("alice", "frank"), user=("bob", "carol"), reader=("dave",))
    proj.write_inventory([user("frank", "frank"), *docs])
    r = proj.cli("plan", "--observed", str(snap))
    assert r.code == 0, r.err
    assert "+ add member frank@example.com to mst-finance.ledger-admin  (not in the snapshot" in r.out
    assert "1 users are not in the snapshot" in r.err


def test_a_broken_snapshot_is_a_located_error(proj: Project) -> None:
    snap = proj.root / "snap.json"
    doc = {"formatVersion": 1, "kind": "snapshot", "createdAt": "x", "tenants": {"a": 1}}
    snap.write_text(json.dumps(doc))
    r = proj.cli("plan", "--observed", str(snap))
    assert r.code == 1
    assert f"{snap}: a malformed snapshot" in r.err
    assert "Traceback" not in r.err
