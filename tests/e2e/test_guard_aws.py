"""The deletion guard counts access taken away, not groups renamed: a landing zone's new
platformGroupAlias moves 200 members from the old group to the new one past a 25% guard, while
removing the same 200 bindings is still refused. Against moto; what happened is read back there."""

from __future__ import annotations

import pytest
import yaml
from sqlalchemy import text

from tests.e2e.conftest import ACCOUNTS, Project, standard_inventory, user

LEDGER = "finance/ledger/aws.eu-central-1"
OLD, NEW = "mst-finance.ledger-admin", "mst-finance.ledger-administrators"
MANY = tuple(f"u{i:03}" for i in range(200))


def rename_admin_alias(proj: Project) -> None:
    """The landing zone's role admin maps to platformGroupAlias `administrators` from now on."""
    config = yaml.safe_load(proj.config_path.read_text())
    config["landingZones"][0]["roleMappings"]["admin"]["platformGroupAlias"] = "administrators"
    proj.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture
def many(proj: Project) -> list[dict[str, object]]:
    """ledger with 200 admins (and bob, dave), converged under maxDeletions 25%."""
    proj.replication = {"maxDeletions": "25%"}
    proj.write_config()
    proj.users |= {n: proj.aws.create_user(f"{n}@example.com") for n in MANY}
    docs = [user(n, n) for n in MANY] + standard_inventory(admin=MANY, user=("bob",), reader=("dave",))
    proj.write_inventory(docs)
    proj.converge()
    assert len(proj.aws.members(proj.group(OLD))) == 200
    return docs


@pytest.mark.parametrize("recorded", [True, False], ids=["role recorded", "recorded before roles were"])
def test_a_renamed_alias_moves_its_members_past_the_guard(
    proj: Project, many: list[dict[str, object]], recorded: bool
) -> None:
    if not recorded:  # a store written before the role of each group was: only the alias is known
        with proj.store() as store, store.engine.begin() as conn:
            conn.execute(text("UPDATE owned_groups SET project_role = ''"))
    rename_admin_alias(proj)

    r = proj.cli("plan", "--detailed-exitcode")
    assert r.code == 2, r.out + r.err
    assert "DELETION_GUARD" not in r.out
    assert f"- delete group {OLD}" in r.out
    assert f"renamed: replaced by {NEW} (the role admin has a new platformGroupAlias)" in r.out
    summary = proj.cli("plan", "-o", "json").json()["summary"]
    # create, 200 adds and a grant; the old group's revoke and delete (its members go with it)
    assert summary == {"add": 202, "remove": 2, "warnings": 0}

    proj.converge()
    groups = proj.aws.groups()
    assert OLD not in groups
    assert len(proj.aws.members(groups[NEW])) == 200
    assert proj.aws.assignments(ACCOUNTS["ledger"], proj.ps["admin"]) == [("GROUP", groups[NEW])]
    proj.assert_converged()


def test_removing_200_bindings_is_still_refused(proj: Project, many: list[dict[str, object]]) -> None:
    rename_admin_alias(proj)
    proj.converge()  # the rename, as above
    # Now the 200 admins really go: no binding of role admin any more.
    proj.write_inventory([user(n, n) for n in MANY] + standard_inventory(user=("bob",), reader=("dave",)))
    r = proj.cli("reconcile", "--all")
    assert r.code == 1
    assert "DELETION_GUARD: 200 of 202 managed memberships would be removed" in r.out
    assert len(proj.aws.members(proj.group(NEW))) == 200, "nothing is removed"
    with proj.store() as store:
        (row,) = [g for g in store.owned_groups("aws.eu-central-1", LEDGER) if g.name == NEW]
        assert row.project_role == "admin"
