"""The state store on SQLite (embedded default) and on a real PostgreSQL server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from state import Store, StoreError, TenantRecord

PG_ADMIN_URL = os.environ.get("REPLICATOR_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _postgres_database() -> Iterator[str]:
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            name = f"replicator_test_{uuid.uuid4().hex[:10]}"
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as e:  # the server is not there: skip, but never in CI
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required in CI: {e}")
        pytest.skip(
            reason=f"PostgreSQL not reachable at {PG_ADMIN_URL} ({type(e).__name__}); set REPLICATOR_TEST_PG"
        )
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nested' / 'state.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


def _head() -> str:
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    import state.store

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(state.store._MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    assert head >= "0005"
    return head


def test_migrations_create_every_table_and_are_idempotent(store_url: str) -> None:
    Store(store_url).close()
    again = Store(store_url)  # a second open upgrades nothing and fails nothing
    names = set(inspect(again.engine).get_table_names())
    assert names >= {
        "owned_groups",
        "tenants",
        "runs",
        "audit",
        "warnings",
        "lookup_cache",
        "leases",
        "mesh_objects",
        "counters",
        "api_keys",
        "source_syncs",
        "alembic_version",
    }
    assert "token" in {c["name"] for c in inspect(again.engine).get_columns("leases")}
    with again.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == _head()
    again.close()


def test_owned_group_life_cycle(store: Store) -> None:
    store.record_group_intent("aws.x", "ws/p/aws.x", "admin", "mst-ws.p-admin")
    (pending,) = store.owned_groups("aws.x", "ws/p/aws.x")
    assert (pending.platform_id, pending.state) == (None, "pending")

    store.confirm_group("aws.x", "ws/p/aws.x", "mst-ws.p-admin", "g-1", "admin")
    store.add_group_role("aws.x", "ws/p/aws.x", "mst-ws.p-admin", "ps-b")
    store.add_group_role("aws.x", "ws/p/aws.x", "mst-ws.p-admin", "ps-a")
    store.add_group_role("aws.x", "ws/p/aws.x", "mst-ws.p-admin", "ps-a")
    (active,) = store.owned_groups("aws.x", "ws/p/aws.x")
    assert (active.platform_id, active.state, active.roles) == ("g-1", "active", frozenset({"ps-a", "ps-b"}))

    store.remove_group_role("aws.x", "ws/p/aws.x", "mst-ws.p-admin", "ps-b")
    assert store.owned_groups("aws.x", "ws/p/aws.x")[0].roles == frozenset({"ps-a"})
    assert store.owned_groups("aws.x", "other/p/aws.x") == []
    store.forget_group("aws.x", "ws/p/aws.x", "mst-ws.p-admin")
    assert store.owned_groups("aws.x", "ws/p/aws.x") == []


def test_a_run_left_running_by_a_crash_is_marked_interrupted(store: Store) -> None:
    crashed = store.start_run("t1", "aws.x", dry_run=False, now=T0)
    other = store.start_run("t2", "aws.x", dry_run=False, now=T0)
    nxt = store.start_run("t1", "aws.x", dry_run=False, now=T0 + timedelta(minutes=1))
    store.finish_run(nxt, "converged", changes_applied=4, now=T0 + timedelta(minutes=2))
    runs = {r.id: r for r in store.runs("t1")}
    assert runs[crashed].outcome == "interrupted"
    assert runs[nxt].outcome == "converged"
    assert runs[nxt].changes_applied == 4
    assert {r.id: r.outcome for r in store.runs("t2")} == {other: "running"}
    (last,) = store.last_runs("t1")
    assert last.id == nxt
    assert last.finished_at == T0 + timedelta(minutes=2)
    with pytest.raises(StoreError):
        store.finish_run(10_000, "converged")


def test_warnings_open_refresh_and_clear(store: Store) -> None:
    store.sync_warnings("t", "aws.x", [("USER_NOT_FOUND", "u1", "m1"), ("CASE_MISMATCH", "u2", "m2")], now=T0)
    later = T0 + timedelta(hours=1)
    store.sync_warnings("t", "aws.x", [("USER_NOT_FOUND", "u1", "m1 again")], now=later)
    (open_w,) = store.open_warnings("t")
    assert (open_w.code, open_w.subject, open_w.message) == ("USER_NOT_FOUND", "u1", "m1 again")
    assert (open_w.first_seen, open_w.last_seen) == (T0, later)
    cleared = [w for w in store.warning_history("t") if w.cleared_at is not None]
    assert [(w.code, w.cleared_at) for w in cleared] == [("CASE_MISMATCH", later)]
    store.sync_warnings("t", "aws.x", [], now=later)
    assert store.open_warnings() == []


def test_lookup_cache_ttl_and_not_found_never_cached(store: Store) -> None:
    store.store_lookups("aws.x", {"a@x": [("id-a", "A@x")], "b@x": []}, now=T0)
    ttl = timedelta(hours=1)
    assert store.cached_lookups("aws.x", ["a@x", "b@x"], ttl, now=T0 + timedelta(minutes=59)) == {
        "a@x": [("id-a", "A@x")]
    }
    assert store.cached_lookups("aws.x", ["a@x"], ttl, now=T0 + timedelta(minutes=61)) == {}
    assert store.cached_lookups("aws.y", ["a@x"], ttl, now=T0) == {}
    store.store_lookups("aws.x", {"a@x": []}, now=T0)  # the user vanished: the entry goes
    assert store.cached_lookups("aws.x", ["a@x"], ttl, now=T0) == {}


def test_audit_trail_keeps_order(store: Store) -> None:
    run = store.start_run("t", "aws.x", dry_run=False)
    store.audit(run, "t", "aws.x", "create_group", "g", "", "started")
    store.audit(run, "t", "aws.x", "create_group", "g", "", "applied")
    store.audit(run, "t", "aws.x", "add_member", "g", "u", "failed", "boom")
    trail = store.audit_trail("t")
    assert [(a.action, a.outcome, a.error) for a in trail] == [
        ("create_group", "started", None),
        ("create_group", "applied", None),
        ("add_member", "failed", "boom"),
    ]
    assert all(a.run_id == run for a in trail)


def test_tenant_status(store: Store) -> None:
    store.set_tenant_status("t", "aws.x", "123", "Active")
    store.set_tenant_status("t", "aws.x", "123", "Deleted")
    assert store.tenant_statuses() == {"t": "Deleted"}


def test_members_we_added_are_recorded_per_group(store: Store) -> None:
    store.record_group_intent("cf.x", "t", "admin", "space-admin")
    store.confirm_group("cf.x", "t", "space-admin", "sp1/admin", "admin")
    store.add_group_member("cf.x", "t", "space-admin", "u2")
    store.add_group_member("cf.x", "t", "space-admin", "u1")
    store.add_group_member("cf.x", "t", "space-admin", "u1")
    store.remove_group_member("cf.x", "t", "space-admin", "u2")
    store.remove_group_member("cf.x", "t", "space-admin", "nobody")
    (record,) = store.owned_groups("cf.x", "t")
    assert record.members == frozenset({"u1"})
    store.add_group_member("cf.x", "t", "no-such-group", "u3")  # not ours: nothing recorded
    assert [r.name for r in store.owned_groups("cf.x", "t")] == ["space-admin"]


def test_known_tenants_include_groups_without_a_tenant_record(store: Store) -> None:
    store.ensure_tenant("t1", "aws.x", "111")
    store.set_tenant_status("t1", "aws.x", "111", "DeletingGroups")
    store.ensure_tenant("t1", "aws.x", "111")  # an existing record keeps its status
    store.record_group_intent("aws.x", "t2", "admin", "g-admin")  # a first run that crashed
    assert store.known_tenants() == [
        TenantRecord("t1", "aws.x", "111", "DeletingGroups"),
        TenantRecord("t2", "aws.x", "", "Unknown"),
    ]


def test_unreachable_database_is_a_store_error() -> None:
    with pytest.raises(StoreError) as e:
        Store("postgresql://someone:s3cret@127.0.0.1:1/none")
    assert "s3cret" not in str(e.value)


def test_leases_let_one_run_work_on_a_tenant(store: Store) -> None:
    ttl = timedelta(minutes=5)
    first = store.acquire_lease("t", "replica-a", ttl, now=T0)
    assert first is not None
    assert store.acquire_lease("t", "replica-b", ttl, now=T0 + timedelta(minutes=1)) is None
    assert store.acquire_lease("t", "replica-a", ttl, now=T0 + timedelta(minutes=1)) is None, (
        "a lease is a run's: the same replica's second run does not get it while the first holds it"
    )
    assert store.renew_lease("t", "replica-a", first, ttl, now=T0 + timedelta(minutes=1)), "renewal"
    assert store.lease_holder("t", now=T0 + timedelta(minutes=2)) == "replica-a"
    # a dead replica's lease expires and another takes over
    second = store.acquire_lease("t", "replica-b", ttl, now=T0 + timedelta(minutes=7))
    assert second is not None
    assert store.lease_holder("t", now=T0 + timedelta(minutes=7)) == "replica-b"
    store.release_lease("t", "replica-a", first)  # not the holder: nothing happens
    store.release_lease("t", "replica-b", first)  # not this run's token: nothing happens
    assert store.lease_holder("t", now=T0 + timedelta(minutes=7)) == "replica-b"
    store.release_lease("t", "replica-b", second)
    assert store.lease_holder("t", now=T0 + timedelta(minutes=7)) is None
    assert store.acquire_lease("t", "replica-a", ttl, now=T0 + timedelta(minutes=8))


def test_fencing_tokens_grow_and_a_lost_lease_cannot_be_renewed(store: Store) -> None:
    ttl = timedelta(minutes=5)
    first = store.acquire_lease("t", "replica-a", ttl, now=T0)
    assert first is not None
    assert store.renew_lease("t", "replica-a", first, ttl, now=T0 + timedelta(minutes=2))
    # replica-a stalls past its TTL; replica-b takes over with a larger token
    second = store.acquire_lease("t", "replica-b", ttl, now=T0 + timedelta(minutes=8))
    assert second is not None
    assert second > first
    assert not store.renew_lease("t", "replica-a", first, ttl, now=T0 + timedelta(minutes=8))
    assert store.renew_lease("t", "replica-b", second, ttl, now=T0 + timedelta(minutes=9))
    # released and taken again, by the same replica too: each run gets a larger token
    store.release_lease("t", "replica-b", second)
    third = store.acquire_lease("t", "replica-b", ttl, now=T0 + timedelta(minutes=9))
    assert third is not None
    assert third > second
    assert not store.renew_lease("t", "replica-b", second, ttl, now=T0 + timedelta(minutes=9)), (
        "the earlier run's token no longer renews, although the replica is the same"
    )


def test_two_stores_race_for_one_lease(store_url: str) -> None:
    """Two replicas (two engines on one database) asking at once: exactly one wins."""
    from concurrent.futures import ThreadPoolExecutor

    a, b = Store(store_url), Store(store_url)
    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(
                pool.map(
                    lambda args: args[0].acquire_lease("race", args[1], timedelta(minutes=5), now=T0),
                    [(a, "a"), (b, "b")],
                )
            )
        assert sorted(r is not None for r in results) == [False, True]
    finally:
        a.close()
        b.close()


def test_replicas_starting_together_migrate_once(store_url: str) -> None:
    """Several processes opening one empty database at once (replicas of a new Deployment): every
    one of them comes up, none fails on a half-created schema."""
    from concurrent.futures import ThreadPoolExecutor

    def open_close(_: int) -> str:
        Store(store_url).close()
        return "ok"

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(open_close, range(4))) == ["ok"] * 4


def test_two_runs_caching_one_user_at_once_both_succeed(store_url: str) -> None:
    """Two tenants' runs (worker threads, or replicas) find the same user at the same moment:
    caching it twice is not an error for either."""
    import threading

    a, b = Store(store_url), Store(store_url)
    try:
        for n in range(10):
            start = threading.Barrier(2)
            errors: list[Exception] = []

            def cache(
                store: Store,
                user_id: str,
                n: int = n,
                start: threading.Barrier = start,
                errors: list[Exception] = errors,
            ) -> None:
                start.wait()
                try:
                    store.store_lookups("aws.x", {f"bob{n}@example.com": [(user_id, "bob")]})
                except Exception as e:  # the assertion below names it
                    errors.append(e)

            threads = [threading.Thread(target=cache, args=(s, i)) for s, i in ((a, "u-a"), (b, "u-b"))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == []
            cached = a.cached_lookups("aws.x", [f"bob{n}@example.com"], timedelta(hours=1))
            assert cached[f"bob{n}@example.com"] in ([("u-a", "bob")], [("u-b", "bob")])
    finally:
        a.close()
        b.close()


def test_migration_0008_keys_the_users_kept_before_it_by_their_folded_user_name(store_url: str) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    import state.store

    if store_url.startswith("sqlite:///"):
        Path(store_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(store_url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(state.store._MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0007")
        insert = text(
            "INSERT INTO scim_resources (resource_type, id, document, revision, created_at, updated_at) "
            "VALUES (:rt, :id, :doc, 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        )
        conn.execute(insert, {"rt": "User", "id": "u1", "doc": '{"userName": "JOSE\\u0301@Example.com "}'})
        conn.execute(insert, {"rt": "Group", "id": "g1", "doc": '{"displayName": "jos\\u00e9@example.com"}'})
    engine.dispose()
    store = Store(store_url)  # upgrades to the head
    try:
        assert store.scim_ids_named("User", "jos\u00e9@example.com") == ["u1"]
        assert store.scim_ids_named("Group", "jos\u00e9@example.com") == [], "a Group is unique by nothing"
    finally:
        store.close()


def test_a_transaction_writes_all_of_its_calls_or_none(store: Store) -> None:
    from state import ObjectWrite

    user = {"kind": "meshUser", "metadata": {"name": "ann"}, "spec": {"euid": "ann"}}
    done: list[str] = []

    def fails_halfway() -> None:
        with store.transaction():
            store.write_objects("scim", [ObjectWrite("meshUser", "ann", user)])
            store.after_commit(lambda: done.append("kept"))
            assert store.get_object("meshUser", "ann") is not None, "the transaction sees its own write"
            raise RuntimeError("the second write failed")

    with pytest.raises(RuntimeError):
        fails_halfway()
    assert store.get_object("meshUser", "ann") is None
    assert store.objects_revision() == 0
    assert done == [], "nothing to keep after a rollback"
    with store.transaction():
        store.write_objects("scim", [ObjectWrite("meshUser", "ann", user)])
        store.put_scim_resources([("User", "ann", {"userName": "ann"})])
        store.after_commit(lambda: done.append("kept"))
        assert done == []
    assert done == ["kept"]
    assert store.get_object("meshUser", "ann") is not None
    assert store.scim_resource("User", "ann") is not None
