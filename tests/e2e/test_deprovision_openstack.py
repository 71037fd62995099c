"""deprovisionCreatedUsers against a real Keystone: a federated user the replicator created is
deleted once no binding needs it and the grace period is over; a user it found is never touched;
a binding back within the grace period keeps the user; a run over some tenants only, or a removed
tenant left on the platform, deprovisions nobody. Read back with plain openstacksdk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from tests.e2e.harness import binding, user
from tests.e2e.test_reconcile_openstack import LEDGER, READER, OsProject
from tests.e2e.test_reconcile_openstack import os_proj as os_proj  # the fixture

pytestmark = pytest.mark.integration


def federated(os_proj: OsProject) -> tuple[str, str]:
    """Federated users on, deprovisioning on with a grace period of one day: (idp id, domain id)."""
    world = os_proj.world
    domain = world.conn.identity.create_domain(name=f"mesh-{world.tag}")
    idp = world.idp(domain.name)
    os_proj.driver_extra = {"federatedIdp": {"enabled": True, "idpId": idp, "userDomain": domain.name}}
    os_proj.platform_extra = {"deprovisionCreatedUsers": {"enabled": True, "gracePeriod": "1d"}}
    os_proj.write_config()
    return idp, domain.id


def bind(os_proj: OsProject, *names: str) -> None:
    """The standard inventory plus zoe and yves (unknown to Keystone) and these reader bindings."""
    extra = [user("zoe", "zoe"), user("yves", "yves")]
    extra += [binding("finance", "ledger", "reader", n) for n in names]
    os_proj.write_inventory(os_proj.inventory(extra=extra))


def age_unneeded(os_proj: OsProject, days: int) -> None:
    """As if the users had been unneeded for ``days`` already."""
    since = datetime.now(UTC) - timedelta(days=days)
    with os_proj.store() as store, store.engine.begin() as conn:
        marked = "UPDATE created_users SET unneeded_since = :s WHERE unneeded_since IS NOT NULL"
        conn.execute(text(marked), {"s": since})


def test_a_created_user_goes_after_the_grace_period_and_a_found_one_never(os_proj: OsProject) -> None:
    world = os_proj.world
    idp, _ = federated(os_proj)
    bind(os_proj, "zoe", "yves", "alice")
    os_proj.converge()
    zoe = world.federated_users(idp, "zoe@example.com")[0]["id"]
    assert {"zoe", "yves", "alice"} <= set(os_proj.members(READER))
    with os_proj.store() as store:
        created = {u.euid for u in store.created_users("openstack.test")}
    assert created == {"zoe@example.com", "yves@example.com"}

    # zoe's and alice's bindings go: zoe (created) waits out the grace period; alice (found) is
    # not ours.
    bind(os_proj, "yves")
    r = os_proj.cli("reconcile", "--all")
    assert r.code == 0, r.out + r.err
    assert "~ user zoe@example.com" in r.out
    assert "deleted after" in r.out
    assert world.conn.identity.find_user(zoe) is not None, "within the grace period"
    explained = os_proj.cli("explain", "--tenant", LEDGER, "--user", "zoe")
    assert explained.code == 0, explained.err
    assert f"created by the replicator on {datetime.now(UTC):%Y-%m-%d} (id {zoe}); no binding needs it" in (
        explained.out
    )
    doc = os_proj.cli("explain", "--tenant", LEDGER, "--user", "zoe", "-o", "json").json()
    assert doc["createdUser"]["id"] == zoe
    assert doc["createdUser"]["deleteAfter"] is not None

    age_unneeded(os_proj, 2)
    plan = os_proj.cli("plan", "--detailed-exitcode")
    assert plan.code == 2, plan.out
    assert f"- delete user zoe@example.com (id {zoe}): grace period over" in plan.out
    doc = os_proj.cli("plan", "-o", "json").json()
    assert doc["users"] == [
        {"platform": "openstack.test", "delete": [{"id": zoe, "euid": "zoe@example.com"}], "waiting": [],
         "blocked": None, "deleted": 0, "error": None}
    ]  # fmt: skip

    # A run over one tenant leaves the users alone: it does not see every binding of the platform.
    assert os_proj.cli("reconcile", "--tenant", LEDGER).code == 0
    assert world.conn.identity.find_user(zoe) is not None

    r = os_proj.cli("reconcile", "--all")
    assert r.code == 0, r.out + r.err
    assert f"- deleted user zoe@example.com (id {zoe})" in r.out
    assert world.conn.identity.find_user(zoe) is None
    assert world.conn.identity.find_user("alice@example.com", domain_id=world.domain.id) is not None
    with os_proj.store() as store:
        assert [u.euid for u in store.created_users("openstack.test")] == ["yves@example.com"]
        trail = [(a.action, a.subject, a.outcome) for a in store.audit_trail("")]
    assert trail == [("delete_user", "zoe@example.com", o) for o in ("started", "applied")]
    assert os_proj.cli("plan", "--detailed-exitcode").code == 0


def test_a_binding_back_within_the_grace_period_keeps_the_user(os_proj: OsProject) -> None:
    idp, _ = federated(os_proj)
    bind(os_proj, "zoe")
    os_proj.converge()
    bind(os_proj)
    os_proj.converge()
    with os_proj.store() as store:
        (rec,) = store.created_users("openstack.test")
        assert rec.unneeded_since is not None
    bind(os_proj, "zoe")
    os_proj.converge()
    age_unneeded(os_proj, 30)
    os_proj.converge()
    assert len(os_proj.world.federated_users(idp, "zoe@example.com")) == 1
    with os_proj.store() as store:
        (rec,) = store.created_users("openstack.test")
        assert rec.unneeded_since is None


def test_more_deletions_than_max_deletions_wait_for_an_operator(os_proj: OsProject) -> None:
    idp, _ = federated(os_proj)
    bind(os_proj, "zoe", "yves")
    os_proj.converge()
    bind(os_proj)
    os_proj.converge()
    os_proj.replication = {"maxDeletions": 1}
    os_proj.write_config()
    age_unneeded(os_proj, 2)
    r = os_proj.cli("reconcile", "--all")
    assert r.code == 1
    assert "DELETION_GUARD: 2 of 2 users the replicator created would be deleted" in r.out
    assert len(os_proj.world.federated_users(idp, "zoe@example.com")) == 1
    r = os_proj.cli("reconcile", "--all", "--allow-deletions")
    assert r.code == 0, r.out + r.err
    assert os_proj.world.federated_users(idp, "zoe@example.com") == []
    assert os_proj.world.federated_users(idp, "yves@example.com") == []


def test_a_run_with_a_tenant_the_guard_holds_deletes_no_user(os_proj: OsProject) -> None:
    """zoe's memberships are withheld by the deletion guard: deleting zoe would take them anyway."""
    idp, _ = federated(os_proj)
    bind(os_proj, "zoe")
    os_proj.converge()
    bind(os_proj)
    os_proj.replication = {"maxDeletions": 0}
    os_proj.write_config()
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    with os_proj.store() as store, store.engine.begin() as conn:  # unneeded for long already
        conn.execute(text("UPDATE created_users SET unneeded_since = :s"), {"s": long_ago})
    r = os_proj.cli("reconcile", "--all")
    assert r.code == 1
    assert "DELETION_GUARD" in r.out
    assert "delete user" not in r.out
    assert len(os_proj.world.federated_users(idp, "zoe@example.com")) == 1


def test_a_run_leaves_the_users_to_the_one_that_holds_their_lease(os_proj: OsProject) -> None:
    """Another run (a daemon's sweep) holds users/<platform>: reconcile --all deletes nobody and
    does not fail; once the lease is free it does."""
    idp, _ = federated(os_proj)
    bind(os_proj, "zoe")
    os_proj.converge()
    bind(os_proj)
    os_proj.converge()
    age_unneeded(os_proj, 2)
    with os_proj.store() as store:
        token = store.acquire_lease("users/openstack.test", "replica-9", timedelta(minutes=5))
        assert token is not None
    r = os_proj.cli("reconcile", "--all")
    assert r.code == 0, r.out + r.err
    assert "delete user" not in r.out
    assert len(os_proj.world.federated_users(idp, "zoe@example.com")) == 1
    with os_proj.store() as store:
        store.release_lease("users/openstack.test", "replica-9", token)
    assert "- deleted user zoe@example.com" in os_proj.converge().out
    assert os_proj.world.federated_users(idp, "zoe@example.com") == []


def test_validate_refuses_the_option_where_no_user_is_created(os_proj: OsProject) -> None:
    os_proj.platform_extra = {"deprovisionCreatedUsers": {"enabled": True}}
    os_proj.write_config()
    r = os_proj.cli("validate")
    assert r.code == 1
    assert "deprovisionCreatedUsers.enabled: this platform creates no users" in r.err


async def test_the_daemon_sweeps_created_users_on_its_schedule(os_proj: OsProject) -> None:
    """The daemon registers the sweep with the resync, and a sweep deletes what is due; while a
    tenant of the platform waits for an operator, a sweep deletes nobody."""
    import asyncio

    from replicator.service.daemon import Daemon
    from replicator.service.users import sweep_users

    idp, _ = federated(os_proj)
    bind(os_proj, "zoe")
    await asyncio.to_thread(os_proj.converge)  # the CLI runs its own event loop
    bind(os_proj)
    await asyncio.to_thread(os_proj.converge)
    age_unneeded(os_proj, 2)
    d = Daemon(config_path=os_proj.config_path, listen=None, workers=1, watch_interval=0.1)
    await d.start()
    try:
        assert d._scheduler is not None
        assert d._scheduler.get_job("users") is not None
        deadline = asyncio.get_running_loop().time() + 30
        while not all(st.last is not None for st in d.tenants.values()):
            assert asyncio.get_running_loop().time() < deadline, "the startup sweep did not finish"
            await asyncio.sleep(0.1)
        (held,) = [k for k in d.tenants if k == LEDGER]
        d.tenants[held].held = "DELETION_GUARD: (as if) waiting for an operator"
        assert await sweep_users(d) == []
        assert len(os_proj.world.federated_users(idp, "zoe@example.com")) == 1
        d.tenants[held].held = None
        (result,) = await sweep_users(d)
        assert (result.deleted, result.error) == (1, None)
        assert os_proj.world.federated_users(idp, "zoe@example.com") == []
    finally:
        await d.stop()
