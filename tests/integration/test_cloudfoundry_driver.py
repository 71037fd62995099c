"""The Cloud Foundry driver over real HTTP against the local CF v3 / UAA server
(tests/support/cf_server.py). Outcomes are read back from the server's state, never through the
driver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from platforms.cloudfoundry import CloudFoundryDriver
from platforms.contract import (
    Action,
    Change,
    ObservedTenant,
    OwnedGroup,
    PendingError,
    PermanentError,
    PlatformConfigError,
    PlatformUser,
    RetryableError,
    TenantRef,
    UnknownUserError,
)
from platforms.registry import driver_class
from tests.integration.conftest import RecordingBudget, closing_drivers
from tests.support.cf_server import CLIENT_SECRET, SECRET_ENV, SPACE_USER_REFUSED, CfServer
from tests.support.local_server import free_port

pytestmark = pytest.mark.integration

DEV, MGR, AUD = "space_developer", "space_manager", "space_auditor"

MakeDriver = Callable[..., CloudFoundryDriver]


@pytest.fixture(scope="module")
def cf_server() -> Iterator[CfServer]:
    with CfServer() as server:
        yield server


@dataclass
class World:
    server: CfServer
    org: str
    space: str
    other_space: str
    users: dict[str, str]

    def tenant(self, space: str | None = None) -> TenantRef:
        local = space or self.space
        return TenantRef(f"finance/ledger/cf.test/{local[:4]}", "cf.test", local)

    def user(self, name: str) -> PlatformUser:
        return PlatformUser(self.users[name], name)

    def roles(self, space: str | None = None) -> list[tuple[str, str]]:
        return self.server.space_roles(space or self.space)


@pytest.fixture
def world(cf_server: CfServer, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)
    cf_server.reset()
    org = cf_server.add_org("finance")
    space = cf_server.add_space(org, "ledger")
    other = cf_server.add_space(org, "payroll")
    users = {n: cf_server.add_user(n) for n in ("alice", "bob", "carol", "dave")}
    return World(cf_server, org, space, other, users)


@pytest.fixture
async def make_driver(world: World) -> AsyncIterator[MakeDriver]:
    async with closing_drivers(
        lambda **extra: CloudFoundryDriver("cf.test", world.server.driver_options(**extra))
    ) as make:
        yield make


def group(
    name: str, roles: tuple[str, ...] = (), members: tuple[str, ...] = (), alias: str | None = None
) -> OwnedGroup:
    return OwnedGroup(
        alias or name.rsplit("-", 1)[-1],
        name,
        f"x/{name}",
        frozenset(roles),
        frozenset(members),
    )


async def change(
    drv: CloudFoundryDriver, tenant: TenantRef, action: Action, name: str, **kw: Any
) -> str | None:
    alias = name.rsplit("-", 1)[-1]
    return await drv.apply(tenant, Change(action, name, alias, **kw), f"{tenant.local_id}/{name}")


def members(observed: ObservedTenant, name: str) -> list[str]:
    (g,) = [g for g in observed.groups if g.name == name]
    return sorted(u.name for u in g.members)


# --- lookup ---------------------------------------------------------------------------------------


async def test_lookup_is_case_insensitive_within_the_origin(world: World, make_driver: MakeDriver) -> None:
    world.server.add_user("Erin@Example.com")
    world.server.add_user("alice", origin="corp-idp")  # same name in another user store
    drv = make_driver(lookupBatchSize=2)
    found = await drv.lookup_users(["ALICE", "erin@example.com", "nobody"])
    assert found["ALICE"] == (world.user("alice"),)
    assert [u.name for u in found["erin@example.com"]] == ["Erin@Example.com"]
    assert found["nobody"] == ()
    # ALICE, alice, erin@example.com, nobody (as given and lower-cased, deduplicated) by 2
    assert drv.api_calls["list_users"] == 2
    again = await drv.lookup_users(["alice", "nobody"])
    assert again["alice"] == (world.user("alice"),)
    assert drv.api_calls["list_users"] == 2, "lookups are memoised per driver"


async def test_lookup_of_another_origin_and_a_case_sensitive_server(
    world: World, make_driver: MakeDriver
) -> None:
    world.server.world.case_sensitive_usernames = True
    idp_alice = world.server.add_user("alice", origin="corp-idp")
    drv = make_driver(origin="corp-idp")
    found = await drv.lookup_users(["Alice", "bob"])
    assert found == {"Alice": (PlatformUser(idp_alice, "alice"),), "bob": ()}


async def test_lookup_follows_pages_and_scans_when_many_are_asked(
    world: World, make_driver: MakeDriver
) -> None:
    drv = make_driver(pageSize=1, scanAbove=2)
    found = await drv.lookup_users(["alice", "BOB", "carol"])
    assert {e: [u.id for u in us] for e, us in found.items()} == {
        "alice": [world.users["alice"]],
        "BOB": [world.users["bob"]],
        "carol": [world.users["carol"]],
    }
    # a scan of all 4 users, one per page
    assert drv.api_calls["list_users"] == 4


# --- reconcile ------------------------------------------------------------------------------------


async def test_first_reconcile_gives_org_user_and_space_roles(
    world: World, driver: CloudFoundryDriver, make_driver: MakeDriver
) -> None:
    t = world.tenant()
    observed = await driver.observe(t, [], {"admin": "ledger-admin"})
    assert observed.groups == ()
    assert observed.foreign == {}
    assert sum(driver.api_calls.values()) == 0
    gid = await change(driver, t, Action.CREATE_GROUP, "ledger-admin")
    assert gid == f"{world.space}/ledger-admin"
    await change(driver, t, Action.ADD_MEMBER, "ledger-admin", user=world.user("alice"))
    assert world.roles() == [], "a group created in this run has no roles yet"
    assert world.server.org_roles(world.org) == [("alice", "organization_user")]
    await change(driver, t, Action.GRANT, "ledger-admin", role=DEV)
    await change(driver, t, Action.GRANT, "ledger-admin", role=MGR)
    assert world.roles() == [("alice", DEV), ("alice", MGR)]
    assert world.roles(world.other_space) == []

    owned = [group("ledger-admin", (DEV, MGR), (world.users["alice"],))]
    drv2 = make_driver()
    again = await drv2.observe(t, owned, {"admin": "ledger-admin"})
    assert members(again, "ledger-admin") == ["alice"]
    assert again.groups[0].roles == {DEV, MGR}
    assert again.groups[0].id == "x/ledger-admin"
    assert dict(drv2.api_calls) == {"uaa_token": 1, "list_roles": 1}


async def test_a_member_who_lost_a_role_is_missing_and_add_recreates_it(
    world: World, driver: CloudFoundryDriver
) -> None:
    alice, bob = world.users["alice"], world.users["bob"]
    world.server.add_role("organization_user", alice, org=world.org)
    world.server.add_role("organization_user", bob, org=world.org)
    for user in (alice, bob):
        world.server.add_role(DEV, user, space=world.space)
        world.server.add_role(AUD, user, space=world.space)
    world.server.delete_role(AUD, "bob", world.space)
    t = world.tenant()
    observed = await driver.observe(t, [group("ledger-user", (DEV, AUD), (alice, bob))], {})
    assert members(observed, "ledger-user") == ["alice"]
    await change(driver, t, Action.ADD_MEMBER, "ledger-user", user=world.user("bob"))
    assert world.roles() == [("alice", AUD), ("alice", DEV), ("bob", AUD), ("bob", DEV)]
    assert driver.api_calls["create_role"] == 2, "org user (422: has it) + the missing auditor role"


async def test_unmanaged_roles_are_never_reported_nor_removed(
    world: World, driver: CloudFoundryDriver
) -> None:
    alice, carol = world.users["alice"], world.users["carol"]
    for user in (alice, carol):
        world.server.add_role("organization_user", user, org=world.org)
        world.server.add_role(DEV, user, space=world.space)
    world.server.add_role(MGR, carol, space=world.space)
    t = world.tenant()
    observed = await driver.observe(t, [group("ledger-user", (DEV,), (alice,))], {})
    assert members(observed, "ledger-user") == ["alice"]
    await change(driver, t, Action.REVOKE, "ledger-user", role=DEV)
    await change(driver, t, Action.DELETE_GROUP, "ledger-user")
    assert world.roles() == [("carol", DEV), ("carol", MGR)]
    assert world.server.org_roles(world.org) == [
        ("alice", "organization_user"),
        ("carol", "organization_user"),
    ]
    assert driver.api_calls["delete_role"] == 1


async def test_a_recorded_member_who_lost_a_role_loses_the_rest_with_the_group(
    world: World, driver: CloudFoundryDriver
) -> None:
    """Bob lost space_auditor by hand and is no longer bound: he is not reported (the plan does not
    touch him), but revoking the group's roles still takes his remaining role."""
    alice, bob = world.users["alice"], world.users["bob"]
    for user in (alice, bob):
        world.server.add_role("organization_user", user, org=world.org)
        world.server.add_role(DEV, user, space=world.space)
    world.server.add_role(AUD, alice, space=world.space)
    t = world.tenant()
    observed = await driver.observe(t, [group("ledger-user", (DEV, AUD), (alice, bob))], {})
    assert members(observed, "ledger-user") == ["alice"]
    await change(driver, t, Action.GRANT, "ledger-user", role=MGR)
    assert ("bob", MGR) not in world.roles(), "a grant gives nothing to a member not reported"
    await change(driver, t, Action.REVOKE, "ledger-user", role=DEV)
    await change(driver, t, Action.REVOKE, "ledger-user", role=AUD)
    assert world.roles() == [("alice", MGR)]


async def test_a_partial_holder_bound_nowhere_is_reported_so_the_plan_removes_it(
    world: World, driver: CloudFoundryDriver
) -> None:
    alice, bob = world.users["alice"], world.users["bob"]
    for user in (alice, bob):
        world.server.add_role("organization_user", user, org=world.org)
        world.server.add_role(DEV, user, space=world.space)
    world.server.add_role(AUD, alice, space=world.space)
    # bob lost space_auditor by hand; the run's lookups matched alice only: bob is bound nowhere
    driver.remember_users([world.user("alice")])
    t = world.tenant()
    observed = await driver.observe(t, [group("ledger-user", (DEV, AUD), (alice, bob))], {})
    assert members(observed, "ledger-user") == ["alice", "bob"]
    await change(driver, t, Action.REMOVE_MEMBER, "ledger-user", user=world.user("bob"))
    assert world.roles() == [("alice", AUD), ("alice", DEV)]


async def test_remove_member_keeps_a_role_another_group_still_grants(
    world: World, driver: CloudFoundryDriver
) -> None:
    bob = world.users["bob"]
    world.server.add_role("organization_user", bob, org=world.org)
    world.server.add_role(DEV, bob, space=world.space)
    world.server.add_role(AUD, bob, space=world.space)
    t = world.tenant()
    owned = [group("ledger-admin", (DEV,), (bob,)), group("ledger-user", (DEV, AUD), (bob,))]
    observed = await driver.observe(t, owned, {})
    assert members(observed, "ledger-admin") == members(observed, "ledger-user") == ["bob"]
    await change(driver, t, Action.REMOVE_MEMBER, "ledger-user", user=world.user("bob"))
    assert world.roles() == [("bob", DEV)], "ledger-admin still grants space_developer"
    await change(driver, t, Action.REMOVE_MEMBER, "ledger-admin", user=world.user("bob"))
    assert world.roles() == []
    assert world.server.org_roles(world.org) == [("bob", "organization_user")], "never removed"
    await change(driver, t, Action.REMOVE_MEMBER, "ledger-admin", user=world.user("bob"))  # idempotent


async def test_rename_moves_roles_without_a_gap(world: World, driver: CloudFoundryDriver) -> None:
    alice, bob = world.users["alice"], world.users["bob"]
    for user in (alice, bob):
        world.server.add_role("organization_user", user, org=world.org)
        world.server.add_role(DEV, user, space=world.space)
    t = world.tenant()
    await driver.observe(t, [group("old-user", (DEV,), (alice, bob))], {"user": "new-user"})
    deletes = world.server.calls("DELETE", r"/v3/roles/.*")
    # the plan's order for a rename with bob dropped at the same time
    await change(driver, t, Action.CREATE_GROUP, "new-user")
    await change(driver, t, Action.ADD_MEMBER, "new-user", user=world.user("alice"))
    await change(driver, t, Action.GRANT, "new-user", role=DEV)
    await change(driver, t, Action.REVOKE, "old-user", role=DEV)
    await change(driver, t, Action.DELETE_GROUP, "old-user")
    assert world.roles() == [("alice", DEV)]
    assert world.server.calls("DELETE", r"/v3/roles/.*") == deletes + 1
    assert driver.api_calls["create_role"] == 1, "only alice's org role (422); her developer role exists"


async def test_a_role_someone_gave_before_is_adopted_and_its_guid_found(
    world: World, driver: CloudFoundryDriver
) -> None:
    dave = world.users["dave"]
    t = world.tenant()
    await driver.observe(t, [], {"user": "ledger-user"})
    await change(driver, t, Action.CREATE_GROUP, "ledger-user")
    await change(driver, t, Action.GRANT, "ledger-user", role=DEV)
    # between our observe and the add, someone gives dave the role: CF answers 422
    world.server.add_role("organization_user", dave, org=world.org)
    world.server.add_role(DEV, dave, space=world.space)
    await change(driver, t, Action.ADD_MEMBER, "ledger-user", user=world.user("dave"))
    assert world.roles() == [("dave", DEV)]
    await change(driver, t, Action.REMOVE_MEMBER, "ledger-user", user=world.user("dave"))
    assert world.roles() == []
    assert driver.api_calls["find_role"] == 1


async def test_deletion_jobs_are_followed_through_processing_and_polling(
    world: World, driver: CloudFoundryDriver
) -> None:
    """A deletion job is PROCESSING, then POLLING, then ends: the role is gone only then, and the
    change returns only then (treating POLLING as an end would leave the role in place)."""
    alice, bob = world.users["alice"], world.users["bob"]
    for user in (alice, bob):
        world.server.add_role("organization_user", user, org=world.org)
        world.server.add_role(DEV, user, space=world.space)
    t = world.tenant()
    await driver.observe(t, [group("ledger-user", (DEV,), (alice, bob))], {})
    world.server.world.job_lag = 0.3
    await change(driver, t, Action.REMOVE_MEMBER, "ledger-user", user=world.user("alice"))
    assert world.roles() == [("bob", DEV)]
    (seen,) = world.server.job_states_seen()
    assert seen[0] == "PROCESSING", seen
    assert "POLLING" in seen, seen
    assert seen[-1] == "COMPLETE", seen
    world.server.world.job_mode = "fail"
    with pytest.raises(PermanentError, match="failed: Deletion of role failed"):
        await change(driver, t, Action.REMOVE_MEMBER, "ledger-user", user=world.user("bob"))
    assert world.roles() == [("bob", DEV)]


async def test_a_job_outlasting_the_wait_is_pending_and_the_same_job_is_polled_again(
    world: World, make_driver: MakeDriver
) -> None:
    alice = world.users["alice"]
    world.server.add_role("organization_user", alice, org=world.org)
    world.server.add_role(DEV, alice, space=world.space)
    drv = make_driver(jobTimeout=0.05)
    t = world.tenant()
    await drv.observe(t, [group("ledger-user", (DEV,), (alice,))], {})
    world.server.world.job_lag = 0.6
    with pytest.raises(PendingError, match=r"still (PROCESSING|POLLING)") as caught:
        await change(drv, t, Action.REVOKE, "ledger-user", role=DEV)
    assert caught.value.retry_after is not None
    assert world.roles() == [("alice", DEV)], "the job has not run yet"
    # The engine retries the change: the driver follows the job it started, it does not delete twice.
    deadline = time.monotonic() + 10
    while True:
        try:
            await change(drv, t, Action.REVOKE, "ledger-user", role=DEV)
            break
        except PendingError:
            assert time.monotonic() < deadline, "the job never ended"
            await asyncio.sleep(0.05)
    assert world.roles() == []
    assert world.server.calls("DELETE", r"/v3/roles/.*") == 1
    assert len(world.server.job_states_seen()) == 1


# --- who the Cloud Controller lists, and users it does not know yet --------------------------------


async def test_lookup_lists_only_users_the_cloud_controller_knows_and_the_caller_reads(
    world: World, make_driver: MakeDriver
) -> None:
    world.server.add_uaa_user("zoe")  # in UAA, never logged in to Cloud Foundry
    elsewhere = world.server.add_org("elsewhere")
    frank = world.server.add_user("frank")
    world.server.add_role("organization_user", frank, org=elsewhere)
    world.server.add_role("organization_user", world.users["alice"], org=world.org)
    found = await make_driver().lookup_users(["zoe", "frank", "alice", "bob"])
    assert {e: [u.name for u in us] for e, us in found.items()} == {
        "zoe": [],
        "frank": ["frank"],
        "alice": ["alice"],
        "bob": ["bob"],
    }, "an admin reads every Cloud Controller user, but not zoe"
    world.server.world.caller_orgs = {world.org}  # an org manager of finance only
    found = await make_driver().lookup_users(["zoe", "frank", "alice", "bob"])
    assert {e: [u.name for u in us] for e, us in found.items()} == {
        "zoe": [],
        "frank": [],
        "alice": ["alice"],
        "bob": [],
    }, "an org manager reads users with a role in its orgs only"


async def test_a_user_the_cloud_controller_does_not_know_is_ensured_by_username_and_origin(
    world: World, make_driver: MakeDriver
) -> None:
    world.server.world.caller_orgs = {world.org}
    zoe = world.server.add_uaa_user("Zoe@Example.com", origin="corp-idp")
    drv = make_driver(origin="corp-idp")
    assert drv.ensures_users
    assert await drv.lookup_users(["zoe@example.com"]) == {"zoe@example.com": ()}
    t = world.tenant()
    await drv.observe(t, [], {"user": "ledger-user"})
    await change(drv, t, Action.CREATE_GROUP, "ledger-user")
    ensured = await change(drv, t, Action.ENSURE_USER, "ledger-user", euid="zoe@example.com")
    assert ensured == zoe, "the Cloud Controller user has UAA's guid"
    assert world.server.org_roles(world.org) == [("Zoe@Example.com", "organization_user")]
    await change(drv, t, Action.ADD_MEMBER, "ledger-user", user=PlatformUser(zoe, "zoe@example.com"))
    await change(drv, t, Action.GRANT, "ledger-user", role=DEV)
    assert world.roles() == [("Zoe@Example.com", DEV)]
    assert drv.api_calls["create_role"] == 2, "the org role once (by username), the space role by guid"

    # The next run's lookup finds the same user; ensuring again changes nothing.
    again = make_driver(origin="corp-idp")
    assert await again.lookup_users(["zoe@example.com"]) == {
        "zoe@example.com": (PlatformUser(zoe, "Zoe@Example.com"),)
    }
    assert await change(again, t, Action.ENSURE_USER, "ledger-user", euid="zoe@example.com") == zoe
    assert world.server.org_roles(world.org) == [("Zoe@Example.com", "organization_user")]


async def test_ensuring_a_user_uaa_does_not_know(world: World, make_driver: MakeDriver) -> None:
    drv = make_driver(origin="corp-idp")
    t = world.tenant()
    await drv.observe(t, [], {})
    with pytest.raises(UnknownUserError, match="UAA has no user 'ghost' in origin 'corp-idp'"):
        await change(drv, t, Action.ENSURE_USER, "ledger-user", euid="ghost")
    assert world.server.org_roles(world.org) == []
    # With CAPI's allow_user_creation_by_org_manager the Cloud Controller makes the UAA shadow user.
    world.server.world.allow_user_creation_by_org_manager = True
    guid = await change(drv, t, Action.ENSURE_USER, "ledger-user", euid="ghost")
    assert guid == world.server.cc_user("ghost", "corp-idp")
    assert world.server.org_roles(world.org) == [("ghost", "organization_user")]
    off = make_driver(ensureUsers=False)
    assert not off.ensures_users
    with pytest.raises(PermanentError, match="ensureUsers is off"):
        await change(off, t, Action.ENSURE_USER, "ledger-user", euid="ghost")


def test_the_server_refuses_a_space_role_by_username_before_the_org_role(world: World) -> None:
    """The fake as roles_controller.rb: a space role for a user the Cloud Controller does not know
    (or who has no org role) is 422; the org role by username + origin makes the user."""
    import httpx

    world.server.add_uaa_user("zoe", origin="corp-idp")
    token = httpx.post(
        f"{world.server.url}uaa/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("replicator", CLIENT_SECRET),
    ).json()["access_token"]
    headers = {"Authorization": f"bearer {token}"}
    zoe = {"data": {"username": "zoe", "origin": "corp-idp"}}

    def post(scope: str, guid: str, role: str) -> httpx.Response:
        body = {"type": role, "relationships": {"user": zoe, scope: {"data": {"guid": guid}}}}
        return httpx.post(f"{world.server.url}v3/roles", json=body, headers=headers)

    refused = post("space", world.space, DEV)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["detail"] == SPACE_USER_REFUSED
    assert post("organization", world.org, "organization_user").status_code == 201
    assert post("space", world.space, DEV).status_code == 201
    assert world.roles() == [("zoe", DEV)]


async def test_observe_reads_every_page(
    world: World, monkeypatch: pytest.MonkeyPatch, make_driver: MakeDriver
) -> None:
    # The server names its external host in links (as behind a proxy): only their paths are used.
    monkeypatch.setattr(world.server.world, "base", "http://cf.example.invalid/")
    for user in world.users.values():
        world.server.add_role("organization_user", user, org=world.org)
        world.server.add_role(DEV, user, space=world.space)
        world.server.add_role(MGR, user, space=world.other_space)  # not this tenant's
    drv = make_driver(pageSize=3)
    owned = [group("ledger-user", (DEV,), tuple(world.users.values()))]
    observed = await drv.observe(world.tenant(), owned, {})
    assert members(observed, "ledger-user") == ["alice", "bob", "carol", "dave"]
    assert drv.api_calls["list_roles"] == 2
    await change(drv, world.tenant(), Action.REMOVE_MEMBER, "ledger-user", user=world.user("bob"))
    assert ("bob", DEV) not in world.roles()
    assert drv.api_calls["get_job"] == 1


# --- errors and auth -------------------------------------------------------------------------------


async def test_throttling_pauses_the_budget_and_is_retryable(
    world: World, driver: CloudFoundryDriver
) -> None:
    budget = RecordingBudget()
    driver.budget = budget
    world.server.fail_next("GET", "/v3/roles", 429, retry_after="7")
    with pytest.raises(RetryableError) as caught:
        await driver.observe(world.tenant(), [group("ledger-user", (DEV,))], {})
    assert caught.value.retry_after == 7.0
    assert budget.pauses == [7.0]
    world.server.fail_next("GET", "/v3/roles", 503)
    with pytest.raises(RetryableError):
        await driver.observe(world.tenant(), [group("ledger-user", (DEV,))], {})
    observed = await driver.observe(world.tenant(), [group("ledger-user", (DEV,))], {})
    assert len(observed.groups) == 1


@pytest.mark.parametrize("retry_after", [True, False], ids=["retry-after-is-the-epoch", "reset-only"])
async def test_the_rate_limiters_epoch_seconds_are_read_as_a_time(
    world: World, driver: CloudFoundryDriver, retry_after: bool
) -> None:
    """CF's rate limiter sends X-RateLimit-Reset (epoch seconds) and a Retry-After with the same
    epoch value, or (issue 20) X-RateLimit-Reset alone: either way the wait is until the reset,
    plus the second ``to_i`` truncated, not 1.7 billion seconds and not nothing."""
    budget = RecordingBudget()
    driver.budget = budget
    world.server.throttle_next("GET", "/v3/roles", reset_in=2, retry_after=retry_after)
    with pytest.raises(RetryableError, match="HTTP 429: Rate Limit Exceeded") as caught:
        await driver.observe(world.tenant(), [group("ledger-user", (DEV,))], {})
    wait = caught.value.retry_after
    assert wait is not None
    assert 1.0 <= wait <= 3.5, wait
    assert budget.pauses == [wait]


async def test_the_rate_limiter_throttles_an_org_manager_not_an_admin(
    world: World, make_driver: MakeDriver
) -> None:
    world.server.world.rate_limit = (2, 30.0)
    admin = make_driver()
    for _ in range(3):
        await admin.observe(world.tenant(), [group("ledger-user", (DEV,))], {})
    world.server.world.caller_orgs = {world.org}
    manager = make_driver()
    await manager.observe(world.tenant(), [group("ledger-user", (DEV,))], {})
    await manager.observe(world.tenant(), [group("ledger-user", (DEV,))], {})
    with pytest.raises(RetryableError) as caught:
        await manager.observe(world.tenant(), [group("ledger-user", (DEV,))], {})
    assert caught.value.retry_after is not None
    assert 29 <= caught.value.retry_after <= 32


async def test_an_unreachable_server_is_retryable_and_tls_trouble_is_not(
    world: World, make_driver: MakeDriver
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    drv = make_driver(apiUrl=closed, uaaUrl=closed)
    with pytest.raises(RetryableError, match="cannot reach the server"):
        await drv.lookup_users(["alice"])
    tls = world.server.url.replace("http://", "https://")
    drv = make_driver(apiUrl=tls, uaaUrl=tls)
    with pytest.raises(PlatformConfigError, match="TLS"):
        await drv.lookup_users(["alice"])


async def test_an_expired_token_is_fetched_again_once(world: World, driver: CloudFoundryDriver) -> None:
    await driver.observe(world.tenant(), [group("ledger-user", (DEV,))], {})
    world.server.expire_tokens()
    await driver.observe(world.tenant(), [group("ledger-user", (DEV,))], {})
    assert driver.api_calls["uaa_token"] == 2
    assert driver.api_calls["list_roles"] == 3  # one refused with 401, then again


async def test_refused_credentials_name_no_secret(
    world: World, monkeypatch: pytest.MonkeyPatch, make_driver: MakeDriver
) -> None:
    monkeypatch.setenv(SECRET_ENV, "wrong-secret-value")
    drv = make_driver(uaaUrl=None)
    with pytest.raises(PlatformConfigError) as caught:
        await drv.lookup_users(["alice"])
    assert "wrong-secret-value" not in str(caught.value)
    assert "refused the client credentials" in str(caught.value)
    assert drv.api_calls["get_root"] == 1, "UAA's URL read from the root links"
    monkeypatch.delenv(SECRET_ENV)
    drv = make_driver()
    with pytest.raises(PlatformConfigError, match=f"{SECRET_ENV} is not set"):
        await drv.lookup_users(["alice"])


async def test_unknown_space_and_foreign_org_are_config_errors(world: World, make_driver: MakeDriver) -> None:
    other_org = world.server.add_org("elsewhere")
    foreign_space = world.server.add_space(other_org, "x")
    drv = make_driver(orgGuid=world.org)
    missing = world.tenant("00000000-0000-0000-0000-000000000000")
    await drv.observe(missing, [], {"user": "g-user"})
    with pytest.raises(PlatformConfigError, match="does not exist"):
        await change(drv, missing, Action.CREATE_GROUP, "g-user")
    foreign = world.tenant(foreign_space)
    await drv.observe(foreign, [], {"user": "g-user"})
    with pytest.raises(PlatformConfigError, match="not to the configured orgGuid"):
        await change(drv, foreign, Action.CREATE_GROUP, "g-user")
    with pytest.raises(PermanentError, match="not observed first"):
        await change(drv, world.tenant(), Action.GRANT, "g-user", role=DEV)
    await drv.observe(world.tenant(), [], {})
    with pytest.raises(PermanentError, match="not a space role type"):
        await change(drv, world.tenant(), Action.GRANT, "g-user", role="organization_manager")


def test_registered_capabilities_and_options() -> None:
    cls = driver_class("cloudfoundry")
    assert cls is CloudFoundryDriver
    caps = cls.capabilities_for(None)
    assert caps.has_groups is False
    assert caps.external_grants_default == "keep"
    assert caps.lookup_attribute == "username"
    assert caps.check_role("space_supporter") is None
    assert caps.check_role("organization_user") is not None
    with pytest.raises(PlatformConfigError, match="invalid cloudfoundry block"):
        CloudFoundryDriver(
            "cf.test", {"apiUrl": "https://api.example.com", "clientId": "x", "clientSecret": "literal"}
        )
