"""A change of users and groups checked by what it touches gives the answer that validating the
whole inventory gives: the same problems, or the same inventory."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replicator.core.inventory import object_key
from replicator.inputs.loader import InputError, Loaded, load
from replicator.inputs.revise import Checked, revise
from replicator.inputs.validate import validate
from replicator.sources import stored
from state import Store

FILES = """\
kind: meshUser
metadata: {name: filer}
spec: {euid: file-euid}
---
kind: meshWorkspace
metadata: {name: ws}
---
kind: meshProject
metadata: {name: p, ownedByWorkspace: ws}
---
kind: meshUserGroup
metadata: {name: filegroup}
spec: {members: [filer]}
---
kind: meshProjectBinding
metadata: {ownedByWorkspace: ws, ownedByProject: p, name: b}
spec: {role: admin, subjects: [{group: bound}, {user: u0}]}
"""

USERS = ["u0", "u1", "u2", "u3", "filer"]
GROUPS = ["g0", "g1", "bound", "filegroup"]
# fullwidth, decomposed and padded forms of one euid, which compare as one
EUIDS = [None, "alice", "ALICE", "\uff41\uff4c\uff49\uff43\uff45", "Jose\u0301", "José ", "bob", "file-euid"]


def _base() -> Loaded:
    root = Path(tempfile.mkdtemp())
    (root / "org.yaml").write_text(FILES)
    (root / "replicator.yaml").write_text(
        "state: sqlite:///state.db\ninventory: [org.yaml]\nstoredObjects: true\n"
    )
    store = Store(f"sqlite:///{root / 'state.db'}")
    store.migrate()
    try:
        # u0 and the group "bound" exist, as the file's binding needs them.
        seed = stored.Change(
            "scim",
            puts=stored.as_loaded([_user("u0", "zed"), _group("bound", ["u0"])], "seed"),
        )
        stored.apply(root / "replicator.yaml", store, seed)
        return load(root / "replicator.yaml", store)
    finally:
        store.close()


def _user(name: str, euid: str | None) -> Any:
    from replicator.core.inventory import MeshUser

    spec = {"euid": euid} if euid is not None else {}
    return MeshUser.model_validate({"kind": "meshUser", "metadata": {"name": name}, "spec": spec})


def _group(name: str, members: list[str]) -> Any:
    from replicator.core.inventory import MeshUserGroup

    doc = {"kind": "meshUserGroup", "metadata": {"name": name}, "spec": {"members": members}}
    return MeshUserGroup.model_validate(doc)


BASE = _base()

user_puts = st.tuples(st.sampled_from(USERS), st.sampled_from(EUIDS)).map(lambda t: _user(*t))
group_puts = st.tuples(
    st.sampled_from(GROUPS), st.lists(st.sampled_from([*USERS, "nobody"]), max_size=3)
).map(lambda t: _group(*t))
changes = st.builds(
    lambda puts, deprovisions, deletes: stored.Change(
        "scim",
        puts=stored.as_loaded(puts, "SCIM"),
        deprovisions={("meshUser", u) for u in deprovisions},
        deletes={("meshUserGroup", g) for g in deletes},
    ),
    st.lists(st.one_of(user_puts, group_puts), max_size=3, unique_by=lambda o: (o.kind, o.metadata.name)),
    st.lists(st.sampled_from(USERS), max_size=2),
    st.lists(st.sampled_from(GROUPS), max_size=1),
)


def _whole(loaded: Loaded, change: stored.Change) -> Checked | list[str]:
    after = stored.candidate(loaded, change)
    try:
        return Checked(after, validate(after))
    except InputError as e:
        return sorted(str(p) for p in e.problems)


def _keys(loaded: Loaded) -> set[tuple[str, str | None]]:
    return {(lo.obj.kind, object_key(lo.obj)) for lo in loaded.objects}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(changes, min_size=1, max_size=6))
def test_a_revision_answers_as_validating_the_whole_inventory(steps: list[stored.Change]) -> None:
    current = Checked(BASE, validate(BASE))
    for change in steps:
        whole = _whole(current.loaded, change)
        try:
            revised = revise(current, stored.edit(current.loaded, change))
        except InputError as e:
            problems = sorted(str(p) for p in e.problems)
        else:
            problems = None
        if problems is not None:
            assert problems == whole
            continue
        if revised is None:  # not one it checks: the whole inventory is validated instead
            if isinstance(whole, Checked):
                current = whole
            continue
        assert isinstance(whole, Checked), f"revise accepted what validate refuses: {whole}"
        inv, expected = revised.validated.inventory, whole.validated.inventory
        assert inv.users == expected.users
        assert inv.groups == expected.groups
        assert inv.bindings == expected.bindings
        assert _keys(revised.loaded) == _keys(whole.loaded)
        assert len(revised.loaded.objects) == len(whole.loaded.objects)
        assert revised.loaded.deprovisioned_users == whole.loaded.deprovisioned_users
        carried, fresh = revised.index(), Checked(revised.loaded, revised.validated).index()
        assert carried == fresh, "the carried indexes are those a fresh build gives"
        current = revised


def test_users_and_groups_are_revised_and_other_changes_validated_whole() -> None:
    base = Checked(BASE, validate(BASE))
    user = stored.Change("scim", puts=stored.as_loaded([_user("u1", "carol")], "SCIM"))
    assert revise(base, stored.edit(BASE, user)) is not None
    twin = stored.Change(
        "scim", puts=stored.as_loaded([_user("u1", "\uff26\uff49\uff4c\uff45-EUID")], "SCIM User u1")
    )
    with pytest.raises(InputError, match="also the euid of meshUser filer: euids must be unique"):
        revise(base, stored.edit(BASE, twin))
    # A group a binding names is not deleted by a revision (the binding's location is needed).
    bound = stored.Change("scim", deletes={("meshUserGroup", "bound")})
    assert revise(base, stored.edit(BASE, bound)) is None
    deleted_user = stored.Change("scim", deletes={("meshUser", "u0")})
    assert revise(base, stored.edit(BASE, deleted_user)) is None
    in_file = stored.Change("scim", puts=stored.as_loaded([_user("filer", "x")], "SCIM"))
    assert revise(base, stored.edit(BASE, in_file)) is None
