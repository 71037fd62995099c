"""The Cloud Foundry driver over real HTTP against the local CF v3 / UAA server
(tests/support/cf_server.py). Outcomes are read back from the server's state, never through the
driver."""

from __future__ import annotations

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
    PermanentError,
    PlatformConfigError,
    PlatformUser,
    RetryableError,
    TenantRef,
)
from platforms.registry import driver_class
from tests.integration.conftest import RecordingBudget, closing_drivers
from tests.support.cf_server import CLIENT_SECRET, SECRET_ENV, CfServer
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


async def test_deletion_jobs_are_followed(world: World, driver: CloudFoundryDriver) -> None:
    alice, bob = world.users["alice"], world.users["bob"]
    for user in (alice, bob):
        world.server.add_role("organization_user", user, org=world.org)
        world.server.add_role(DEV, user, space=world.space)
    t = world.tenant()
    await driver.observe(t, [group("ledger-user", (DEV,), (alice, bob))], {})
    world.server.world.job_mode = "processing"
    await change(driver, t, Action.REMOVE_MEMBER, "ledger-user", user=world.user("alice"))
    assert world.roles() == [("bob", DEV)]
    assert driver.api_calls["get_job"] == 2, "PROCESSING, then COMPLETE"
    world.server.world.job_mode = "fail"
    with pytest.raises(PermanentError, match="failed: Deletion of role failed"):
        await change(driver, t, Action.REMOVE_MEMBER, "ledger-user", user=world.user("bob"))
    assert world.roles() == [("bob", DEV)]


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
