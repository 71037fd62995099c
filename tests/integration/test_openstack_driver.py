"""OpenstackDriver against a real Keystone (from PyPI, on SQLite) over HTTP.

Every result is read back from Keystone with plain openstacksdk (``tests.support.keystone.World``),
never through the driver. One Keystone serves the whole session; each test works in its own
domain, projects and identity provider, so tests need no reset.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from platforms.contract import (
    Action,
    Change,
    ForeignObjectError,
    OwnedGroup,
    PermanentError,
    PlatformConfigError,
    PlatformUser,
    RetryableError,
    TenantRef,
)
from platforms.openstack import OpenstackDriver, OpenstackOptions
from tests.integration.conftest import assert_import_loads_no_sdk, closing_drivers, marker
from tests.support.keystone import ADMIN_PASSWORD, PASSWORD_ENV, Keystone, World, shared
from tests.support.local_server import free_port

pytestmark = pytest.mark.integration

PLATFORM = "openstack.test"
ADMIN = "acme.web-admin"
READER = "acme.web-reader"

MakeDriver = Callable[..., OpenstackDriver]


@pytest.fixture
def keystone(monkeypatch: pytest.MonkeyPatch) -> Keystone:
    monkeypatch.setenv(PASSWORD_ENV, ADMIN_PASSWORD)
    return shared()


@pytest.fixture
def world(keystone: Keystone) -> Iterator[World]:
    w = World(keystone, uuid.uuid4().hex[:10])
    yield w
    w.cleanup()


@pytest.fixture
def tenant(world: World) -> TenantRef:
    return TenantRef(f"acme/web/{PLATFORM}", PLATFORM, world.project("web"))


@pytest.fixture
async def make_driver(world: World) -> AsyncIterator[MakeDriver]:
    async with closing_drivers(
        lambda **extra: OpenstackDriver(PLATFORM, world.driver_options(**extra))
    ) as make:
        yield make


def test_import_does_not_load_openstacksdk() -> None:
    assert_import_loads_no_sdk("platforms.registry", "openstack", ("openstack", "keystoneauth1"))


def test_options_camel_case_strict_and_login_forms() -> None:
    password = {"username": "u", "password": {"env": "X"}, "projectName": "p"}
    opts = OpenstackOptions.model_validate({"authUrl": "https://k/v3", "credentials": password})
    assert opts.group_domain == "Default"
    assert opts.federated_idp.enabled is False
    app = {"applicationCredentialId": "a", "applicationCredentialSecret": {"file": "/s"}}
    assert OpenstackOptions.model_validate({"authUrl": "https://k/v3", "credentials": app}).credentials
    assert OpenstackOptions.model_validate({"credentials": {"cloud": "mycloud"}}).credentials
    assert OpenstackOptions.model_validate({"cloud": "mycloud"}).cloud == "mycloud"
    with pytest.raises(ValueError, match="authUrl and credentials"):
        OpenstackOptions.model_validate({"authUrl": "https://k/v3"})
    with pytest.raises(ValueError, match="idpId"):
        OpenstackOptions.model_validate({"cloud": "c", "federatedIdp": {"enabled": True}})
    with pytest.raises(ValueError, match="bogus"):
        OpenstackOptions.model_validate({"cloud": "c", "bogus": 1})
    with pytest.raises(PlatformConfigError):
        OpenstackDriver(PLATFORM, {"authUrl": "https://k/v3"})
    schema = OpenstackOptions.model_json_schema(by_alias=True)
    assert "groupDomain" in schema["properties"]
    assert schema["properties"]["groupDomain"]["description"].startswith("Keystone domain")


async def test_missing_secret_is_a_config_error_without_the_value(
    world: World, tenant: TenantRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSWORD_ENV)
    driver = OpenstackDriver(PLATFORM, world.driver_options())
    with pytest.raises(PlatformConfigError, match=PASSWORD_ENV):
        await driver.lookup_users(["x"])
    monkeypatch.setenv(PASSWORD_ENV, "wrong-password-123")
    driver = OpenstackDriver(PLATFORM, world.driver_options())
    with pytest.raises(PlatformConfigError) as info:
        await driver.lookup_users(["x"])
    assert "wrong-password-123" not in str(info.value)


async def test_lookup_case_insensitive_memoised(world: World, driver: OpenstackDriver) -> None:
    alice = world.user("Alice.Smith")
    world.user("bob")
    found = await driver.lookup_users(["alice.smith", "BOB", "nobody"])
    assert found["alice.smith"] == (PlatformUser(alice, "Alice.Smith"),)
    assert [u.name for u in found["BOB"]] == ["bob"]
    assert found["nobody"] == ()
    calls = sum(driver.api_calls.values())
    assert dict(driver.api_calls) == {"find_domain": 1, "list_users": 1}
    again = await driver.lookup_users(["ALICE.SMITH"])
    assert again["ALICE.SMITH"][0].id == alice
    assert sum(driver.api_calls.values()) == calls


async def test_create_group_with_marker_again_same_id(
    world: World, driver: OpenstackDriver, tenant: TenantRef
) -> None:
    gid = await driver.apply(tenant, Change(Action.CREATE_GROUP, ADMIN, "admin"), None)
    again = await driver.apply(tenant, Change(Action.CREATE_GROUP, ADMIN, "admin"), None)
    assert gid == again
    groups = world.groups()
    assert list(groups) == [ADMIN]
    assert groups[ADMIN].id == gid
    assert groups[ADMIN].description == marker(tenant)


async def test_create_group_refuses_a_foreign_group(
    world: World, driver: OpenstackDriver, tenant: TenantRef
) -> None:
    foreign = world.conn.identity.create_group(name=ADMIN, domain_id=world.domain.id, description="by hand")
    with pytest.raises(ForeignObjectError, match="not ours"):
        await driver.apply(tenant, Change(Action.CREATE_GROUP, ADMIN, "admin"), None)
    # another tenant's marker is not ours either
    other = TenantRef(f"acme/api/{PLATFORM}", PLATFORM, world.project("api"))
    await driver.apply(other, Change(Action.CREATE_GROUP, READER, "reader"), None)
    with pytest.raises(ForeignObjectError):
        await driver.apply(tenant, Change(Action.CREATE_GROUP, READER, "reader"), None)
    groups = world.groups()
    assert groups[ADMIN].id == foreign.id
    assert groups[ADMIN].description == "by hand"
    assert world.members(foreign.id) == []


async def test_add_and_remove_member_twice(world: World, driver: OpenstackDriver, tenant: TenantRef) -> None:
    user = PlatformUser(world.user("carol"), "carol")
    gid = await driver.apply(tenant, Change(Action.CREATE_GROUP, ADMIN, "admin"), None)
    add = Change(Action.ADD_MEMBER, ADMIN, "admin", user=user)
    await driver.apply(tenant, add, gid)
    await driver.apply(tenant, add, gid)
    assert world.members(str(gid)) == ["carol"]
    remove = Change(Action.REMOVE_MEMBER, ADMIN, "admin", user=user)
    await driver.apply(tenant, remove, gid)
    await driver.apply(tenant, remove, gid)
    assert world.members(str(gid)) == []


async def test_grant_and_revoke_twice_exact_assignments(
    world: World, driver: OpenstackDriver, tenant: TenantRef
) -> None:
    role = f"creator-{world.tag}"
    world.role(role)
    gid = str(await driver.apply(tenant, Change(Action.CREATE_GROUP, ADMIN, "admin"), None))
    for r in ("member", role, "member", role):
        await driver.apply(tenant, Change(Action.GRANT, ADMIN, "admin", role=r), gid)
    assert world.assignments(tenant.local_id, gid) == sorted(["member", role])
    for _ in range(2):
        await driver.apply(tenant, Change(Action.REVOKE, ADMIN, "admin", role=role), gid)
    assert world.assignments(tenant.local_id, gid) == ["member"]
    # a revoke of a role Keystone does not know is already true
    await driver.apply(tenant, Change(Action.REVOKE, ADMIN, "admin", role=f"gone-{world.tag}"), gid)


async def test_grant_of_a_missing_role_names_it(
    world: World, driver: OpenstackDriver, tenant: TenantRef
) -> None:
    gid = await driver.apply(tenant, Change(Action.CREATE_GROUP, ADMIN, "admin"), None)
    with pytest.raises(PermanentError, match="heat_stack_owner_missing"):
        await driver.apply(tenant, Change(Action.GRANT, ADMIN, "admin", role="heat_stack_owner_missing"), gid)
    assert world.assignments(tenant.local_id, str(gid)) == []


async def test_observe_members_roles_vanished_foreign_pending(
    world: World, driver: OpenstackDriver, tenant: TenantRef
) -> None:
    ident = world.conn.identity
    dave = world.user("dave")
    gid = str(await driver.apply(tenant, Change(Action.CREATE_GROUP, ADMIN, "admin"), None))
    await driver.apply(
        tenant, Change(Action.ADD_MEMBER, ADMIN, "admin", user=PlatformUser(dave, "dave")), gid
    )
    await driver.apply(tenant, Change(Action.GRANT, ADMIN, "admin", role="member"), gid)
    # an assignment made by hand on the owned group, and one on another project (not this tenant)
    ident.assign_project_role_to_group(tenant.local_id, gid, world.role_id("reader"))
    ident.assign_project_role_to_group(world.project("elsewhere"), gid, world.role_id("manager"))
    # a group deleted by someone else, a recorded group whose marker was removed, a pending leftover
    gone = str(await driver.apply(tenant, Change(Action.CREATE_GROUP, "acme.web-gone", "gone"), None))
    ident.delete_group(gone)
    hijacked = ident.create_group(name="acme.web-hijacked", domain_id=world.domain.id, description="mine")
    pending = ident.create_group(name=READER, domain_id=world.domain.id, description=marker(tenant))
    taken = ident.create_group(name="acme.web-user", domain_id=world.domain.id, description="by hand")
    owned = [
        OwnedGroup("admin", ADMIN, gid, frozenset({"member"})),
        OwnedGroup("gone", "acme.web-gone", gone),
        OwnedGroup("hijacked", "acme.web-hijacked", hijacked.id),
        OwnedGroup("reader", READER, None),
    ]
    desired = {"admin": ADMIN, "reader": READER, "user": "acme.web-user", "new": "acme.web-new"}
    observed = await driver.observe(tenant, owned, desired)
    by_name = {g.name: g for g in observed.groups}
    assert sorted(by_name) == [ADMIN, READER]
    assert by_name[ADMIN].members == frozenset({PlatformUser(dave, "dave")})
    assert by_name[ADMIN].roles == frozenset({"member", "reader"})
    assert by_name[READER].id == pending.id
    assert by_name[READER].alias == "reader"
    assert observed.vanished == ("acme.web-gone",)
    assert dict(observed.foreign) == {"acme.web-hijacked": hijacked.id, "acme.web-user": taken.id}
    # another tenant's pending group is not adopted
    other = TenantRef(f"acme/api/{PLATFORM}", PLATFORM, world.project("api"))
    seen = await driver.observe(other, [OwnedGroup("reader", READER, None)], {"reader": READER})
    assert seen.groups == ()
    assert dict(seen.foreign) == {READER: pending.id}


async def test_observe_reads_the_project_assignments_once(
    world: World, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    setup = make_driver()
    ids = [
        str(await setup.apply(tenant, Change(Action.CREATE_GROUP, name, alias), None))
        for alias, name in (("admin", ADMIN), ("reader", READER))
    ]
    await setup.apply(tenant, Change(Action.GRANT, ADMIN, "admin", role="member"), ids[0])
    driver = make_driver()
    owned = [OwnedGroup("admin", ADMIN, ids[0]), OwnedGroup("reader", READER, ids[1])]
    observed = await driver.observe(tenant, owned, {"admin": ADMIN, "reader": READER})
    assert {g.name: g.roles for g in observed.groups} == {ADMIN: frozenset({"member"}), READER: frozenset()}
    # per group: the group (its marker) and its members; the project's assignments once
    assert dict(driver.api_calls) == {"get_group": 2, "list_group_users": 2, "list_role_assignments": 1}
    # a tenant none of whose groups is left reads no assignments at all
    world.conn.identity.delete_group(ids[0])
    world.conn.identity.delete_group(ids[1])
    empty = make_driver()
    gone = await empty.observe(tenant, owned, {"admin": ADMIN, "reader": READER})
    assert gone.groups == ()
    assert sorted(gone.vanished) == sorted([ADMIN, READER])
    assert "list_role_assignments" not in empty.api_calls


async def test_observe_keeps_only_our_groups_assignments_on_the_project(
    world: World, driver: OpenstackDriver, tenant: TenantRef
) -> None:
    """The project's assignments are read whole and filtered here: another group's and a user's
    assignments on the same project, our group's on another project and our group's inherited to
    the project's subprojects are not roles of our group on the project."""
    ident = world.conn.identity
    gid = str(await driver.apply(tenant, Change(Action.CREATE_GROUP, ADMIN, "admin"), None))
    await driver.apply(tenant, Change(Action.GRANT, ADMIN, "admin", role="member"), gid)
    other = ident.create_group(name="acme.web-other", domain_id=world.domain.id, description="by hand")
    ident.assign_project_role_to_group(tenant.local_id, other.id, world.role_id("manager"))
    ident.assign_project_role_to_user(tenant.local_id, world.user("gina"), world.role_id("reader"))
    ident.assign_project_role_to_group(world.project("elsewhere"), gid, world.role_id("reader"))
    # inherited to the project's subprojects: listed on the project, but no role on it
    inherited = f"/OS-INHERIT/projects/{tenant.local_id}/groups/{gid}/roles/{world.role_id('manager')}"
    assert ident.put(inherited + "/inherited_to_projects").status_code == 204
    observed = await driver.observe(tenant, [OwnedGroup("admin", ADMIN, gid)], {"admin": ADMIN})
    (group,) = observed.groups
    assert group.id == gid
    assert group.roles == frozenset({"member"})


async def test_delete_group_owned_and_foreign(
    world: World, driver: OpenstackDriver, tenant: TenantRef
) -> None:
    gid = await driver.apply(tenant, Change(Action.CREATE_GROUP, ADMIN, "admin"), None)
    foreign = world.conn.identity.create_group(name=READER, domain_id=world.domain.id, description="x")
    with pytest.raises(ForeignObjectError):
        await driver.apply(tenant, Change(Action.DELETE_GROUP, READER, "reader"), foreign.id)
    with pytest.raises(ForeignObjectError):
        await driver.apply(tenant, Change(Action.DELETE_GROUP, READER, "reader"), None)
    await driver.apply(tenant, Change(Action.DELETE_GROUP, ADMIN, "admin"), gid)
    await driver.apply(tenant, Change(Action.DELETE_GROUP, ADMIN, "admin"), gid)
    assert list(world.groups()) == [READER]


async def test_federated_ensure_creates_finds_and_picks_up(
    world: World, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    fed_domain = world.conn.identity.create_domain(name=f"mesh-{world.tag}")
    idp = world.idp(fed_domain.name)
    fed = {"enabled": True, "idpId": idp, "protocolId": "openid", "userDomain": fed_domain.name}
    driver = make_driver(federatedIdp=fed)
    assert driver.ensures_users
    assert not make_driver().ensures_users
    assert (await driver.lookup_users(["erin@example.com"]))["erin@example.com"] == ()
    ensure = Change(Action.ENSURE_USER, ADMIN, "admin", euid="erin@example.com")
    first = await driver.apply(tenant, ensure, None)
    (row,) = world.federated_users(idp, "erin@example.com")
    assert row["id"] == first
    assert row["name"] == "erin@example.com"
    assert row["domain_id"] == fed_domain.id
    # a second ensure, on this driver and on a fresh one, finds the same user
    assert await driver.apply(tenant, ensure, None) == first
    assert await make_driver(federatedIdp=fed).apply(tenant, ensure, None) == first
    assert len(world.federated_users(idp, "erin@example.com")) == 1
    # a user that exists by name in the federated domain (made by hand, not federated) is picked up
    frank = world.user("frank@example.com", domain_id=fed_domain.id)
    picked = await driver.apply(
        tenant, Change(Action.ENSURE_USER, ADMIN, "admin", euid="frank@example.com"), None
    )
    assert picked == frank
    # the lookup of a fresh driver sees both in the federated domain
    found = await make_driver(federatedIdp=fed).lookup_users(["ERIN@example.com", "frank@example.com"])
    assert found["ERIN@example.com"][0].id == first
    assert found["frank@example.com"][0].id == frank
    # without federatedIdp, ensure is refused
    with pytest.raises(PermanentError, match="federatedIdp"):
        await make_driver().apply(tenant, ensure, None)


async def test_missing_domain_is_a_config_error(make_driver: MakeDriver) -> None:
    driver = make_driver(userDomain="no-such-domain-xyz")
    with pytest.raises(PlatformConfigError, match="no-such-domain-xyz"):
        await driver.lookup_users(["a"])


async def test_closed_port_is_retryable(world: World, tenant: TenantRef) -> None:
    driver = OpenstackDriver(PLATFORM, world.driver_options(authUrl=f"http://127.0.0.1:{free_port()}/v3"))
    try:
        with pytest.raises(RetryableError):
            await driver.lookup_users(["a"])
        with pytest.raises(RetryableError):
            await driver.apply(tenant, Change(Action.CREATE_GROUP, ADMIN, "admin"), None)
    finally:
        await driver.close()


async def test_incomplete_changes_are_permanent(driver: OpenstackDriver, tenant: TenantRef) -> None:
    with pytest.raises(PermanentError, match="no platform id"):
        await driver.apply(tenant, Change(Action.GRANT, ADMIN, "admin", role="member"), None)
    with pytest.raises(PermanentError, match="names no user"):
        await driver.apply(tenant, Change(Action.ADD_MEMBER, ADMIN, "admin"), "gid")
    with pytest.raises(PermanentError, match="names no role"):
        await driver.apply(tenant, Change(Action.GRANT, ADMIN, "admin"), "gid")


# --- the group scan (prepare) ---------------------------------------------------------------------


def test_group_scan_threshold_option() -> None:
    base = {"cloud": "c"}
    assert OpenstackOptions.model_validate(base).group_scan_threshold == 20
    assert OpenstackOptions.model_validate({**base, "groupScanThreshold": 0}).group_scan_threshold == 0
    with pytest.raises(ValueError, match="groupScanThreshold"):
        OpenstackOptions.model_validate({**base, "groupScanThreshold": -1})
    schema = OpenstackOptions.model_json_schema(by_alias=True)
    assert schema["properties"]["groupScanThreshold"]["default"] == 20


async def test_scanned_observe_of_several_tenants_lists_groups_once(
    world: World, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    setup = make_driver()
    other = TenantRef(f"acme/api/{PLATFORM}", PLATFORM, world.project("api"))
    dave = PlatformUser(world.user("dave"), "dave")
    owned: dict[TenantRef, list[OwnedGroup]] = {}
    desired: dict[TenantRef, dict[str, str]] = {}
    for t, prefix in ((tenant, "acme.web"), (other, "acme.api")):
        records = []
        for alias in ("admin", "reader"):
            name = f"{prefix}-{alias}"
            gid = str(await setup.apply(t, Change(Action.CREATE_GROUP, name, alias), None))
            await setup.apply(t, Change(Action.ADD_MEMBER, name, alias, user=dave), gid)
            await setup.apply(t, Change(Action.GRANT, name, alias, role="member"), gid)
            records.append(OwnedGroup(alias, name, gid, frozenset({"member"})))
        owned[t] = records
        desired[t] = {r.alias: r.name for r in records}
    world.conn.identity.create_group(name="bystander", domain_id=world.domain.id, description="by hand")

    plain = make_driver()
    await plain.prepare(4)  # below the default threshold (20): no scan
    assert plain.api_calls.total() == 0
    expected = {t: await plain.observe(t, owned[t], desired[t]) for t in (tenant, other)}
    assert dict(plain.api_calls) == {"get_group": 4, "list_group_users": 4, "list_role_assignments": 2}
    assert all(len(o.groups) == 2 and not o.vanished and not o.foreign for o in expected.values())

    scanned = make_driver(groupScanThreshold=4)
    await scanned.prepare(4)
    assert dict(scanned.api_calls) == {"find_domain": 1, "list_groups": 1}
    scanned.api_calls.clear()
    for t in (tenant, other):
        assert await scanned.observe(t, owned[t], desired[t]) == expected[t]
    # per tenant: G + 1 (members per group, the project's assignments once); no group read
    assert dict(scanned.api_calls) == {"list_group_users": 4, "list_role_assignments": 2}


async def test_scan_keeps_ownership_and_never_takes_over_a_later_group(
    world: World, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    ident = world.conn.identity
    setup = make_driver()

    async def create(name: str, alias: str) -> str:
        return str(await setup.apply(tenant, Change(Action.CREATE_GROUP, name, alias), None))

    admin = await create(ADMIN, "admin")
    hijacked = await create("acme.web-hijacked", "hijacked")
    ident.update_group(hijacked, description="mine now")  # marker removed by hand
    gone = await create("acme.web-gone", "gone")
    ident.delete_group(gone)  # deleted by hand before the scan
    later_gone = await create("acme.web-later", "later")
    pending = ident.create_group(name=READER, domain_id=world.domain.id, description=marker(tenant))
    taken = ident.create_group(name="acme.web-user", domain_id=world.domain.id, description="by hand")
    owned = [
        OwnedGroup("admin", ADMIN, admin),
        OwnedGroup("hijacked", "acme.web-hijacked", hijacked),
        OwnedGroup("gone", "acme.web-gone", gone),
        OwnedGroup("later", "acme.web-later", later_gone),
        OwnedGroup("reader", READER, None),
    ]
    desired = {"admin": ADMIN, "reader": READER, "user": "acme.web-user", "new": "acme.web-new"}

    scanned = make_driver(groupScanThreshold=5)
    await scanned.prepare(7)
    assert dict(scanned.api_calls) == {"find_domain": 1, "list_groups": 1}
    ident.delete_group(later_gone)  # deleted by hand after the scan was taken

    plain = make_driver()
    expected = await plain.observe(tenant, owned, desired)
    assert [g.id for g in expected.groups] == [admin, pending.id]
    assert sorted(expected.vanished) == ["acme.web-gone", "acme.web-later"]
    assert dict(expected.foreign) == {"acme.web-hijacked": hijacked, "acme.web-user": taken.id}
    assert plain.api_calls["get_group"] == 4
    assert plain.api_calls["find_group"] == 3

    # created by someone else after the scan, with a desired name: the scan says the name is free
    late = ident.create_group(name="acme.web-new", domain_id=world.domain.id, description="by hand")
    scanned.api_calls.clear()
    assert await scanned.observe(tenant, owned, desired) == expected
    # the group deleted before the scan is read by id (the scan lacks it); the one deleted after
    # the scan is in it: its member list answers 404, it is dropped from the scan and the tenant
    # observed again, reading it by id (vanished). No name is looked up, the scan is not redone.
    assert dict(scanned.api_calls) == {
        "get_group": 1 + 2,
        "list_group_users": 2 + 2,  # first pass: admin, the deleted one (404); then admin, reader
        "list_role_assignments": 1,  # read once, kept when the observation starts again
    }
    # the scan no longer has the deleted group: the next observe reads it by id, once
    scanned.api_calls.clear()
    assert await scanned.observe(tenant, owned, desired) == expected
    assert dict(scanned.api_calls) == {"get_group": 2, "list_group_users": 2, "list_role_assignments": 1}

    # create_group still asks Keystone, and refuses the group created after the scan
    scanned.api_calls.clear()
    with pytest.raises(ForeignObjectError, match="not ours"):
        await scanned.apply(tenant, Change(Action.CREATE_GROUP, "acme.web-new", "new"), None)
    assert dict(scanned.api_calls) == {"find_group": 1}
    groups = world.groups()
    assert groups["acme.web-new"].id == late.id
    assert groups["acme.web-new"].description == "by hand"
    assert world.members(late.id) == []
    assert groups["acme.web-hijacked"].description == "mine now"


async def test_scan_is_skipped_reset_or_dropped_when_it_fails(
    world: World, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    setup = make_driver()
    gid = str(await setup.apply(tenant, Change(Action.CREATE_GROUP, ADMIN, "admin"), None))
    owned = [OwnedGroup("admin", ADMIN, gid)]
    desired = {"admin": ADMIN}

    never = make_driver(groupScanThreshold=0)
    await never.prepare(10_000)
    assert never.api_calls.total() == 0
    assert [g.id for g in (await never.observe(tenant, owned, desired)).groups] == [gid]
    assert never.api_calls["get_group"] == 1

    below = make_driver(groupScanThreshold=3)
    await below.prepare(2)
    assert below.api_calls.total() == 0
    await below.observe(tenant, owned, desired)
    assert below.api_calls["get_group"] == 1

    # a scan is never reused by the next run: every prepare drops it first
    reset = make_driver(groupScanThreshold=1)
    await reset.prepare(1)
    assert dict(reset.api_calls) == {"find_domain": 1, "list_groups": 1}
    await reset.prepare(0)  # the next run names no group: below the threshold, no scan
    reset.api_calls.clear()
    await reset.observe(tenant, owned, desired)
    assert reset.api_calls["get_group"] == 1

    # a failed scan leaves none: observe reads group by group
    failed = make_driver(groupScanThreshold=1, groupDomain=f"no-such-domain-{world.tag}")
    with pytest.raises(PlatformConfigError, match="no-such-domain"):
        await failed.prepare(5)
    assert "list_groups" not in failed.api_calls
    observed = await failed.observe(tenant, owned, desired)
    assert [g.id for g in observed.groups] == [gid]
    assert failed.api_calls["get_group"] == 1
