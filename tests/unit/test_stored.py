"""The inventory from files plus stored objects, and all-or-nothing changes of the stored ones."""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from replicator.core.inventory import object_key
from replicator.inputs.loader import InputError, Loaded, load, objects_from_documents, parse_yaml_bytes
from replicator.inputs.revise import Checked
from replicator.inputs.validate import validate
from replicator.sources import stored
from state import ObjectOwnedError, Store

FILES = """\
apiVersion: v1
kind: meshUser
metadata: {name: alice}
spec: {euid: alice}
---
apiVersion: v1
kind: meshWorkspace
metadata: {name: finance}
---
apiVersion: v1
kind: meshProject
metadata: {name: ledger, ownedByWorkspace: finance}
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Store]:
    (tmp_path / "org.yaml").write_text(FILES)
    config = tmp_path / "replicator.yaml"
    config.write_text("state: sqlite:///state.db\ninventory: [org.yaml]\nstoredObjects: true\n")
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    return config, store


def _change(source: str, text: str) -> stored.Change:
    docs, problems = parse_yaml_bytes(text.encode(), "request")
    objects, more = objects_from_documents(docs, "request")
    assert not problems
    assert not more
    return stored.Change(source, puts=objects)


BOB_AND_BINDING = """\
kind: meshUser
apiVersion: v1
metadata: {name: bob}
spec: {euid: bob}
---
apiVersion: v1
kind: meshProjectBinding
metadata: {ownedByWorkspace: finance, ownedByProject: ledger, name: admins}
spec: {role: admin, subjects: [{user: bob}, {user: alice}]}
"""


def test_stored_objects_join_the_files(setup: tuple[Path, Store]) -> None:
    config, store = setup
    validated, revision = stored.apply(config, store, _change("api", BOB_AND_BINDING))
    assert revision == store.objects_revision() == 1
    assert set(validated.inventory.users) == {"alice", "bob"}
    again = validate(load(config, store))
    assert set(again.inventory.users) == {"alice", "bob"}
    assert [b.metadata.name for b in again.inventory.bindings] == ["admins"]


def test_a_change_that_breaks_the_inventory_writes_nothing(setup: tuple[Path, Store]) -> None:
    config, store = setup
    bad = BOB_AND_BINDING.replace("{user: alice}", "{user: nobody}")
    with pytest.raises(InputError) as e:
        stored.apply(config, store, _change("api", bad))
    assert [str(p) for p in e.value.problems] == [
        "request:9: meshProjectBinding finance/ledger/admins: spec.subjects[1].user: "
        "unknown meshUser 'nobody'"
    ]
    assert store.list_objects() == []
    assert store.objects_revision() == 0


def test_file_objects_are_read_only(setup: tuple[Path, Store]) -> None:
    config, store = setup
    alice = "apiVersion: v1\nkind: meshUser\nmetadata: {name: alice}\nspec: {euid: other}\n"
    with pytest.raises(InputError, match="defined in an inventory file"):
        stored.apply(config, store, _change("api", alice))
    with pytest.raises(InputError, match="defined in an inventory file"):
        stored.apply(config, store, stored.Change("api", deletes={("meshUser", "alice")}))
    assert store.list_objects() == []


def test_a_duplicate_euid_from_a_source_is_refused(setup: tuple[Path, Store]) -> None:
    config, store = setup
    twin = "apiVersion: v1\nkind: meshUser\nmetadata: {name: alice2}\nspec: {euid: ALICE}\n"
    with pytest.raises(InputError, match="euids must be unique"):
        stored.apply(config, store, _change("oidc:corp", twin))


def test_deprovisioned_users_stay_referable_but_leave_the_inventory(setup: tuple[Path, Store]) -> None:
    config, store = setup
    stored.apply(config, store, _change("ldap:corp", BOB_AND_BINDING.split("---")[0]))
    stored.apply(config, store, _change("api", "---" + BOB_AND_BINDING.split("---")[1]))
    validated, _ = stored.apply(config, store, stored.Change("ldap:corp", deprovisions={("meshUser", "bob")}))
    assert set(validated.inventory.users) == {"alice"}
    reloaded = load(config, store)
    assert reloaded.deprovisioned_users == {"bob"}
    assert set(validate(reloaded).inventory.users) == {"alice"}  # the binding naming bob still validates
    # Deleting him outright would leave the binding dangling: refused before anything is written.
    with pytest.raises(InputError, match="unknown meshUser 'bob'"):
        stored.apply(config, store, stored.Change("ldap:corp", deletes={("meshUser", "bob")}))
    # The API cannot overwrite a user another source owns.
    with pytest.raises(ObjectOwnedError):
        stored.apply(config, store, _change("api", BOB_AND_BINDING.split("---")[0]))
    assert store.get_object("meshUser", "bob") is not None


def test_stored_objects_are_ignored_unless_configured(setup: tuple[Path, Store]) -> None:
    config, store = setup
    stored.apply(config, store, _change("api", BOB_AND_BINDING))
    config.write_text("state: sqlite:///state.db\ninventory: [org.yaml]\n")
    assert set(validate(load(config, store)).inventory.users) == {"alice"}
    with pytest.raises(InputError, match="storedObjects: true"):
        stored.check(config, store, stored.Change("api"))


def _user(name: str, euid: str) -> stored.Change:
    doc = f"apiVersion: v1\nkind: meshUser\nmetadata: {{name: {name}}}\nspec: {{euid: {euid}}}\n"
    return _change("scim", doc)


def _seen(loaded: Loaded) -> tuple[set[tuple[str, str]], frozenset[str]]:
    keys = set()
    for lo in loaded.objects:
        key = object_key(lo.obj)
        assert key is not None
        keys.add((lo.obj.kind, key))
    return keys, loaded.deprovisioned_users


def test_the_cached_inventory_after_each_write_is_the_one_the_store_holds(setup: tuple[Path, Store]) -> None:
    config, store = setup
    cache = stored.LoadedCache()
    loaded = load(config, store)
    cache.keep(Checked(loaded, validate(loaded)))
    steps = [
        _change("scim", BOB_AND_BINDING.split("---")[0]),
        _user("carol", "carol"),
        _change("api", "---" + BOB_AND_BINDING.split("---")[1]),
        stored.Change("scim", deprovisions={("meshUser", "bob")}),
        _user("bob", "bob"),  # revived
        stored.Change("scim", deletes={("meshUser", "carol")}),
        dataclasses.replace(_user("dan", "dan"), deprovisions={("meshUser", "dan")}),  # active: false
        _user("dan", "dan"),  # active again
    ]
    for change in steps:
        _, revision = stored.apply(config, store, change, cache=cache)
        cached = cache.get(revision)
        assert cached is not None, "the write left its inventory in the cache"
        assert _seen(cached.loaded) == _seen(load(config, store))
    assert store.objects_revision() == revision


def test_a_write_by_another_writer_is_read_before_the_next_check(setup: tuple[Path, Store]) -> None:
    config, store = setup
    cache = stored.LoadedCache()
    stored.apply(config, store, _user("bob", "bob"), cache=cache)
    other = Store(store.engine.url.render_as_string(hide_password=False))  # another replica, no cache
    try:
        stored.apply(config, other, _user("carol", "dave"))
    finally:
        other.close()
    with pytest.raises(InputError, match="euids must be unique"):
        stored.apply(config, store, _user("dave", "DAVE"), cache=cache)


def test_a_changed_inventory_file_is_read_before_the_next_check(setup: tuple[Path, Store]) -> None:
    config, store = setup
    cache = stored.LoadedCache()
    stored.apply(config, store, _user("bob", "bob"), cache=cache)
    org = config.parent / "org.yaml"
    org.write_text(FILES + "---\napiVersion: v1\nkind: meshUser\nmetadata: {name: eve}\nspec: {euid: eve}\n")
    stamp = org.stat().st_mtime_ns + 1_000_000  # a new modification time even on a coarse clock
    os.utime(org, ns=(stamp, stamp))
    with pytest.raises(InputError, match="euids must be unique"):
        stored.apply(config, store, _user("eve2", "Eve"), cache=cache)


def test_an_inventory_holds_no_reference_cycles_so_freezing_it_keeps_no_garbage(
    setup: tuple[Path, Store],
) -> None:
    """What ``reload.settle_heap`` relies on: a loaded, validated, indexed and revised inventory is
    freed by reference counting alone once dropped."""
    import gc

    from replicator.inputs.revise import revise
    from replicator.service.reload import prepare

    config, store = setup
    stored.apply(config, store, _change("scim", BOB_AND_BINDING))
    gc.collect()
    gc.disable()
    try:
        loaded = load(config, store)
        checked = Checked(loaded, validate(loaded))
        checked.index()
        revised = revise(checked, stored.edit(loaded, _user("carol", "carol")))
        assert revised is not None
        del loaded, checked, revised
        assert gc.collect() == 0, "objects of the inventory were only freed by the cyclic collector"
    finally:
        gc.enable()
    frozen = gc.get_freeze_count()
    try:
        found = prepare(config, store, None, datetime.now(UTC), freeze=True)
        assert found.validated is not None
        assert gc.get_freeze_count() > frozen, "a full reload froze the heap"
    finally:
        gc.unfreeze()
