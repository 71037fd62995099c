"""`replicator explain` against moto: the chain from binding to platform change."""

from __future__ import annotations

from tests.e2e.conftest import PLATFORM, Project, binding, standard_inventory, user

LEDGER = f"finance/ledger/{PLATFORM}"


def inventory() -> list[dict[str, object]]:
    docs = standard_inventory(admin=("alice",), user=("bob",), reader=())
    docs += [
        user("ivan"),  # no euid
        user("zoe", "zoe"),  # not on the platform
        {
            "apiVersion": "v1",
            "kind": "meshUserGroup",
            "metadata": {"name": "auditors"},
            "spec": {"members": ["carol", "ivan", "zoe"]},
        },
        binding("finance", "ledger", "reader", groups=("auditors",)),
        binding("finance", "ledger", "admin", "dave", expires="2020-01-01T00:00:00Z"),
    ]
    return docs


def test_explain_a_direct_binding_before_and_after_reconcile(proj: Project) -> None:
    proj.write_inventory(inventory())
    r = proj.cli("explain", "--tenant", LEDGER, "--user", "alice", "-o", "json")
    assert r.code == 0, r.err
    doc = r.json()
    (chain,) = doc["chains"]
    assert chain["via"] == "direct"
    assert chain["role"] == "admin"
    assert chain["alias"] == "admin"
    assert chain["group"] == "mst-finance.ledger-admin"
    assert chain["pattern"] == "#{workspaceIdentifier}.#{projectIdentifier}-#{platformGroupAlias}"
    assert chain["values"] == {
        "workspaceIdentifier": "finance",
        "projectIdentifier": "ledger",
        "platformGroupAlias": "admin",
    }
    assert (chain["euid"], chain["platformEuid"], chain["lookupAttribute"]) == (
        "alice",
        "alice@example.com",
        "userName",
    )
    assert chain["platformUser"] == {"id": proj.users["alice"], "name": "alice@example.com"}
    assert chain["current"] == "group does not exist yet"
    assert chain["outcome"] == "planned: add_member mst-finance.ledger-admin"
    assert proj.aws.groups() == {}, "explain is read-only"

    assert proj.cli("reconcile", "--all").code == 0
    text = proj.cli("explain", "--tenant", LEDGER, "--user", "alice@example.com")
    assert text.code == 0
    assert "member of mst-finance.ledger-admin" in text.out
    assert "-> in sync: nothing to do" in text.out


def test_explain_group_binding_no_euid_not_found_and_expired(proj: Project) -> None:
    proj.write_inventory(inventory())
    carol = proj.cli("explain", "--tenant", LEDGER, "--user", "carol", "-o", "json").json()
    (chain,) = carol["chains"]
    assert chain["via"] == "user group auditors"
    assert chain["outcome"] == "planned: add_member mst-finance.ledger-reader"

    ivan = proj.cli("explain", "--tenant", LEDGER, "--user", "ivan", "-o", "json").json()
    assert ivan["chains"][0]["outcome"] == "USER_HAS_NO_EUID: not replicated to aws.eu-central-1"
    assert [w["code"] for w in ivan["warnings"]] == ["USER_HAS_NO_EUID"]

    zoe = proj.cli("explain", "--tenant", LEDGER, "--user", "zoe", "-o", "json").json()
    assert zoe["chains"][0]["outcome"] == "USER_NOT_FOUND: no platform user with userName 'zoe@example.com'"

    dave = proj.cli("explain", "--tenant", LEDGER, "--user", "dave")
    assert "BINDING_EXPIRED: expired at 2020-01-01T00:00:00+00:00" in dave.out

    erin = proj.cli("explain", "--tenant", LEDGER, "--user", "erin")
    assert "no binding gives this user a role on this project" in erin.out


def test_explain_a_group(proj: Project) -> None:
    proj.write_inventory(inventory())
    assert proj.cli("reconcile", "--all").code == 0
    r = proj.cli("explain", "--tenant", LEDGER, "--group", "mst-finance.ledger-reader", "-o", "json")
    doc = r.json()
    assert doc["exists"] is True
    assert doc["roles"] == [proj.ps["reader"]]
    assert doc["currentMembers"] == ["carol@example.com"]
    assert [(m["user"], m["lookup"]) for m in doc["members"]] == [("carol", "found"), ("zoe", "not found")]
    assert doc["planned"] == []
    text = proj.cli("explain", "--tenant", LEDGER, "--group", "mst-finance.ledger-reader")
    assert "planned: nothing" in text.out


def test_explain_errors(proj: Project) -> None:
    assert proj.cli("explain", "--tenant", LEDGER, "--user", "nobody").code == 1
    assert proj.cli("explain", "--tenant", "x/y/z", "--user", "alice").code == 1
    assert proj.cli("explain", "--tenant", LEDGER, "--group", "mst-nope").code == 1
    assert proj.cli("explain", "--tenant", LEDGER).code == 1, "--user or --group is required"


def test_explain_shows_the_removals_a_run_would_make_and_those_the_guard_withholds(proj: Project) -> None:
    proj.converge()
    # bob and carol lose their "user" binding; with maxDeletions 1 the guard withholds both removals.
    proj.write_inventory(standard_inventory(admin=("alice",), user=(), reader=("dave",)))
    proj.replication = {"maxDeletions": 1}
    proj.write_config()
    doc = proj.cli("explain", "--tenant", LEDGER, "--user", "bob", "-o", "json").json()
    assert doc["chains"] == []
    assert doc["removals"] == [
        {"action": "remove_member", "group": "mst-finance.ledger-user", "withheld": True}
    ]
    text = proj.cli("explain", "--tenant", LEDGER, "--user", "bob").out
    assert "pending removals (access no binding grants any more):" in text
    assert "- remove_member mst-finance.ledger-user  [withheld by the deletion guard" in text
    proj.replication = {"maxDeletions": 10}
    proj.write_config()
    doc = proj.cli("explain", "--tenant", LEDGER, "--user", "bob", "-o", "json").json()
    assert doc["removals"] == [
        {"action": "remove_member", "group": "mst-finance.ledger-user", "withheld": False}
    ]
    alice = proj.cli("explain", "--tenant", LEDGER, "--user", "alice", "-o", "json").json()
    assert alice["removals"] == []
