"""Stored meshObjects, hashed API keys and sync records, on SQLite and on real PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from replicator.sources.apiauth import hash_secret, new_secret
from state import ObjectOwnedError, ObjectWrite, Store, StoreError
from tests.integration.test_store import store, store_url  # noqa: F401  (fixtures)

ALICE = {"apiVersion": "v1", "kind": "meshUser", "metadata": {"name": "alice"}, "spec": {"euid": "alice"}}


def test_write_objects_creates_replaces_and_counts_revisions(store: Store) -> None:  # noqa: F811
    assert store.objects_revision() == 0
    r1 = store.write_objects("api", puts=[ObjectWrite("meshUser", "alice", ALICE)])
    assert r1 == 1
    (obj,) = store.list_objects()
    assert (obj.kind, obj.key, obj.source, obj.revision) == ("meshUser", "alice", "api", 1)
    assert obj.document == ALICE

    # The same document again changes nothing, not even the revision.
    assert store.write_objects("api", puts=[ObjectWrite("meshUser", "alice", ALICE)]) == 1
    changed = {**ALICE, "spec": {"euid": "alice2"}}
    assert store.write_objects("api", puts=[ObjectWrite("meshUser", "alice", changed)]) == 2
    got = store.get_object("meshUser", "alice")
    assert got is not None
    assert got.revision == 2
    assert got.document["spec"] == {"euid": "alice2"}


def test_another_sources_object_is_refused_whole(store: Store) -> None:  # noqa: F811
    store.write_objects("ldap:corp", puts=[ObjectWrite("meshUser", "alice", ALICE)])
    bob = {**ALICE, "metadata": {"name": "bob"}, "spec": {"euid": "bob"}}
    with pytest.raises(ObjectOwnedError) as e:
        store.write_objects(
            "api", puts=[ObjectWrite("meshUser", "bob", bob), ObjectWrite("meshUser", "alice", ALICE)]
        )
    assert e.value.owned == {("meshUser", "alice"): "ldap:corp"}
    assert store.get_object("meshUser", "bob") is None  # all or nothing
    with pytest.raises(ObjectOwnedError):
        store.write_objects("api", deletes=[("meshUser", "alice")])
    store.write_objects("api", puts=[ObjectWrite("meshUser", "alice", ALICE)], take_over=True)
    got = store.get_object("meshUser", "alice")
    assert got is not None
    assert got.source == "api"


def test_deprovisioned_users_are_kept_out_of_lists_and_revived_by_a_put(store: Store) -> None:  # noqa: F811
    store.write_objects("scim", puts=[ObjectWrite("meshUser", "alice", ALICE, external_id="ext-1")])
    before = store.objects_revision()
    after = store.write_objects("scim", deprovisions=[("meshUser", "alice")])
    assert after == before + 1
    assert store.list_objects() == []
    (kept,) = store.list_objects(include_deprovisioned=True)
    assert kept.deprovisioned_at is not None
    assert kept.external_id == "ext-1"
    store.write_objects("scim", puts=[ObjectWrite("meshUser", "alice", ALICE, external_id="ext-1")])
    (revived,) = store.list_objects()
    assert revived.deprovisioned_at is None
    store.write_objects("scim", deletes=[("meshUser", "alice")])
    assert store.list_objects(include_deprovisioned=True) == []


def test_api_keys_are_stored_hashed(store: Store) -> None:  # noqa: F811
    secret, digest = new_secret()
    store.create_api_key("ci", digest, ["write", "read"])
    with pytest.raises(StoreError, match="exists"):
        store.create_api_key("ci", hash_secret("other"), ["read"])
    found = store.api_key_by_hash(hash_secret(secret))
    assert found is not None
    assert found.name == "ci"
    assert found.scopes == ("read", "write")
    assert store.api_key_by_hash(hash_secret(secret + "x")) is None
    with store.engine.connect() as conn:
        from sqlalchemy import text

        dumped = " ".join(str(v) for row in conn.execute(text("SELECT * FROM api_keys")) for v in row)
    assert secret not in dumped
    assert digest in dumped
    store.touch_api_key("ci")
    (listed,) = store.api_keys()
    assert listed.last_used_at is not None
    assert store.revoke_api_key("ci") is True
    assert store.revoke_api_key("ci") is False
    assert store.api_key_by_hash(digest) is None


def test_sync_records(store: Store) -> None:  # noqa: F811
    store.start_sync("ldap:corp")
    (running,) = store.syncs()
    assert running.outcome == "running"
    assert running.last_complete_at is None
    store.finish_sync("ldap:corp", "complete", users=3, groups=1)
    store.start_sync("ldap:corp")
    store.finish_sync("ldap:corp", "failed", error="server down")
    (rec,) = store.syncs()
    assert (rec.outcome, rec.error, rec.last_complete_at is not None) == ("failed", "server down", True)


def test_concurrent_writers_cannot_together_break_the_inventory(
    store_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Eight threads add eight different users with one euid at the same moment: each change is
    valid alone, together they are not. The objects lock lets exactly one through."""
    from replicator.core.inventory import MeshUser
    from replicator.inputs.loader import InputError
    from replicator.sources import stored

    config = tmp_path / "replicator.yaml"
    config.write_text(f"state: {store_url}\nstoredObjects: true\n")
    stores = [Store(store_url) for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def add(i: int) -> None:
        user = MeshUser.model_validate(
            {"kind": "meshUser", "metadata": {"name": f"u{i}"}, "spec": {"euid": "same"}}
        )
        barrier.wait()
        try:
            stored.apply(config, stores[i], stored.Change("api", puts=stored.as_loaded([user], "request")))
            outcomes.append("written")
        except InputError as e:
            outcomes.append("refused" if "euids must be unique" in str(e) else f"other error: {e}")

    threads = [threading.Thread(target=add, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in stores:
        s.close()
    assert sorted(outcomes) == ["refused"] * 7 + ["written"]
    with Store(store_url) as check:
        assert len(check.list_objects("meshUser")) == 1
