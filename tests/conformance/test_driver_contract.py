"""Driver conformance: one set of tests that every platform driver passes, against its real backend
or our wire-faithful server (the adapters in ``tests/conformance/backends.py``).

Properties of the contract (``platforms/contract.py``) checked for every driver:

- each change kind, applied twice, gives the state once gives, with no error the second time;
- ``observe`` reports what was applied (group id, members, roles), also checked on the backend;
- a foreign object with our group name is refused and left untouched;
- a read that fails in the middle of an observation fails the observation (never a smaller one),
  and through the engine fails the tenant's run without removing anything on the backend;
- a 429 with ``Retry-After`` pauses the driver's budget for that long, and the change succeeds on
  retry (by the driver itself, or through the engine after a ``RetryableError`` with
  ``retry_after``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from platforms.contract import (
    Action,
    Change,
    Driver,
    ForeignObjectError,
    OwnedGroup,
    PlatformError,
    PlatformUser,
    RetryableError,
)
from replicator.core.config import Config
from replicator.core.inventory import (
    Inventory,
    MeshProject,
    MeshProjectBinding,
    MeshTenant,
    MeshUser,
    MeshWorkspace,
)
from replicator.engine.results import RunReport
from replicator.engine.runner import Engine
from replicator.inputs.validate import Validated
from state import Store
from tests.conformance.backends import ADAPTERS, RETRY_AFTER, Backend, backend_for
from tests.integration.conftest import RecordingBudget, closing_drivers

pytestmark = pytest.mark.integration

ALIAS = "admin"
PATTERN = "#{workspaceIdentifier}.#{projectIdentifier}-#{platformGroupAlias}"
"""The engine's group names: ``conf.<project>-admin``, as every adapter's ``group_name``."""

MakeDriver = Callable[[], Driver]


WITH_GROUP_OBJECTS = sorted(n for n, a in ADAPTERS.items() if getattr(a, "foreign_unsupported", None) is None)
"""Platforms whose groups are objects that a foreign owner can create under our name (on Cloud
Foundry a group is virtual: its members' space roles; no object can carry its name, so the
foreign-group property does not exist there and is not generated for it)."""


@pytest.fixture(params=sorted(ADAPTERS))
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    with _backend(request) as b:
        yield b


@pytest.fixture(params=WITH_GROUP_OBJECTS)
def group_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    with _backend(request) as b:
        yield b


@contextlib.contextmanager
def _backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    with backend_for(request.param, request) as b:
        defect = b.known_defects.get(request.function.__name__)
        if defect is not None:
            request.applymarker(pytest.mark.xfail(strict=True, reason=defect))
        yield b


@pytest.fixture
async def make_driver(backend: Backend) -> AsyncIterator[MakeDriver]:
    async with closing_drivers(lambda: backend.driver()) as make:
        yield make


def change(
    backend: Backend, action: Action, user: PlatformUser | None = None, role: str | None = None
) -> Change:
    return Change(
        action,
        group=backend.group_name(ALIAS),
        alias=ALIAS,
        user=user,
        euid=user.name if user is not None else None,
        role=role,
    )


async def users(driver: Driver, backend: Backend) -> tuple[PlatformUser, PlatformUser]:
    found = await driver.lookup_users(list(backend.euids))
    (first,) = found[backend.euids[0]]
    (second,) = found[backend.euids[1]]
    return first, second


async def twice(driver: Driver, backend: Backend, c: Change, group_id: str | None) -> str | None:
    """Apply ``c`` twice; both must succeed and return the same thing."""
    first = await driver.apply(backend.tenant, c, group_id)
    again = await driver.apply(backend.tenant, c, group_id)
    assert again == first, f"{c.action}: {first!r} then {again!r}"
    return first


async def observe_first(driver: Driver, backend: Backend) -> None:
    """What the engine does before it applies anything to a tenant (the Cloud Foundry driver keeps
    the tenant's roles from it and refuses changes to a tenant it has not observed)."""
    seen = await driver.observe(backend.tenant, [], {ALIAS: backend.group_name(ALIAS)})
    assert (seen.groups, dict(seen.foreign)) == ((), {})


async def build(driver: Driver, backend: Backend, *members: PlatformUser) -> str:
    """Our group with ``members`` and the adapter's role, each change applied once."""
    await observe_first(driver, backend)
    gid = await driver.apply(backend.tenant, change(backend, Action.CREATE_GROUP), None)
    assert gid
    for user in members:
        await driver.apply(backend.tenant, change(backend, Action.ADD_MEMBER, user=user), gid)
    await driver.apply(backend.tenant, change(backend, Action.GRANT, role=backend.role), gid)
    return gid


def owned(backend: Backend, gid: str | None, roles: set[str], members: set[str]) -> list[OwnedGroup]:
    """The state store's record of our group (what the engine passes to ``observe``)."""
    return [OwnedGroup(ALIAS, backend.group_name(ALIAS), gid, frozenset(roles), frozenset(members))]


# --- idempotent apply -----------------------------------------------------------------------------


async def test_each_change_applied_twice_is_the_same_as_once(
    backend: Backend, make_driver: MakeDriver
) -> None:
    driver = make_driver()
    name = backend.group_name(ALIAS)
    alice, bob = await users(driver, backend)
    await observe_first(driver, backend)
    gid = await twice(driver, backend, change(backend, Action.CREATE_GROUP), None)
    assert gid
    assert backend.group_exists(name, gid)
    for user in (alice, bob):
        await twice(driver, backend, change(backend, Action.ADD_MEMBER, user=user), gid)
    await twice(driver, backend, change(backend, Action.GRANT, role=backend.role), gid)
    assert backend.members(name, gid) == {alice.id, bob.id}
    assert backend.roles(name, gid) == {backend.role}

    await twice(driver, backend, change(backend, Action.REMOVE_MEMBER, user=bob), gid)
    assert backend.members(name, gid) == {alice.id}
    assert backend.roles(name, gid) == {backend.role}
    await twice(driver, backend, change(backend, Action.REVOKE, role=backend.role), gid)
    assert backend.roles(name, gid) == set()
    await twice(driver, backend, change(backend, Action.REMOVE_MEMBER, user=alice), gid)
    assert backend.members(name, gid) == set()
    await twice(driver, backend, change(backend, Action.DELETE_GROUP), gid)
    if driver.capabilities.has_groups:
        assert not backend.group_exists(name, gid)


# --- observe after apply ----------------------------------------------------------------------------


async def test_observe_reports_what_was_applied(backend: Backend, make_driver: MakeDriver) -> None:
    driver = make_driver()
    name = backend.group_name(ALIAS)
    alice, bob = await users(driver, backend)
    gid = await build(driver, backend, alice, bob)
    assert backend.members(name, gid) == {alice.id, bob.id}, "on the backend"
    assert backend.roles(name, gid) == {backend.role}, "on the backend"

    record = owned(backend, gid, {backend.role}, {alice.id, bob.id})
    for reader in (driver, make_driver()):  # the driver that applied, and a fresh one
        seen = await reader.observe(backend.tenant, record, {ALIAS: name})
        (group,) = seen.groups
        assert (group.id, group.name, group.alias) == (gid, name, ALIAS)
        assert {u.id for u in group.members} == {alice.id, bob.id}
        assert group.roles == frozenset({backend.role})
        assert (seen.vanished, dict(seen.foreign)) == ((), {})

    await driver.apply(backend.tenant, change(backend, Action.REMOVE_MEMBER, user=bob), gid)
    seen = await driver.observe(
        backend.tenant, owned(backend, gid, {backend.role}, {alice.id}), {ALIAS: name}
    )
    (group,) = seen.groups
    assert ({u.id for u in group.members}, group.roles) == ({alice.id}, frozenset({backend.role}))
    await driver.apply(backend.tenant, change(backend, Action.REVOKE, role=backend.role), gid)
    seen = await driver.observe(backend.tenant, owned(backend, gid, set(), {alice.id}), {ALIAS: name})
    (group,) = seen.groups
    assert group.roles == frozenset()
    if driver.capabilities.has_groups:  # a virtual group's members are those holding its roles
        assert {u.id for u in group.members} == {alice.id}

    await driver.apply(backend.tenant, change(backend, Action.REMOVE_MEMBER, user=alice), gid)
    await driver.apply(backend.tenant, change(backend, Action.DELETE_GROUP), gid)
    seen = await make_driver().observe(backend.tenant, owned(backend, gid, set(), set()), {})
    if driver.capabilities.has_groups:
        assert (seen.groups, seen.vanished) == ((), (name,))
    else:
        assert all(not g.members and not g.roles for g in seen.groups)


# --- foreign objects -----------------------------------------------------------------------------


async def test_a_foreign_group_with_our_name_is_refused_and_untouched(group_backend: Backend) -> None:
    backend = group_backend
    name = backend.group_name(ALIAS)
    backend.create_foreign(name)
    before = backend.foreign_state(name)
    async with closing_drivers(lambda: backend.driver()) as make_driver:
        driver = make_driver()
        seen = await driver.observe(backend.tenant, [], {ALIAS: name})
        assert name in seen.foreign, "the observation names the foreign group"
        assert seen.groups == ()
        pending = await driver.observe(backend.tenant, owned(backend, None, set(), set()), {ALIAS: name})
        assert pending.groups == (), "a pending record never adopts a group without our marker"
        with pytest.raises(ForeignObjectError):
            await driver.apply(backend.tenant, change(backend, Action.CREATE_GROUP), None)
        with contextlib.suppress(ForeignObjectError):  # deleting by name must not delete it; refusing is fine
            await driver.apply(backend.tenant, change(backend, Action.DELETE_GROUP), None)
    assert backend.foreign_state(name) == before


# --- partial observation ------------------------------------------------------------------------


async def test_a_read_failing_mid_observation_fails_it(backend: Backend, make_driver: MakeDriver) -> None:
    driver = make_driver()
    name = backend.group_name(ALIAS)
    alice, bob = await users(driver, backend)
    gid = await build(driver, backend, alice, bob)
    record = owned(backend, gid, {backend.role}, {alice.id, bob.id})

    backend.fail_observation()
    with pytest.raises(PlatformError):
        await make_driver().observe(backend.tenant, record, {ALIAS: name})
    assert backend.fault_fired()
    backend.clear_faults()
    (group,) = (await make_driver().observe(backend.tenant, record, {ALIAS: name})).groups
    assert {u.id for u in group.members} == {alice.id, bob.id}


def validated(backend: Backend, capabilities: Driver, euids: tuple[str, ...]) -> Validated:
    """Config and inventory of one tenant (the adapter's) with one binding: role ``admin`` (the
    adapter's platform role) for the users ``euids``."""
    tenant = backend.tenant
    workspace, project, _ = tenant.key.split("/", 2)
    config = Config.model_validate(
        {
            "platforms": [
                {
                    "identifier": tenant.platform,
                    "type": backend.platform_type,
                    "userGroupNamePattern": PATTERN,
                }
            ],
            "landingZones": [
                {
                    "identifier": "lz",
                    "platform": tenant.platform,
                    "roleMappings": {ALIAS: {"platformGroupAlias": ALIAS, "platformRoles": [backend.role]}},
                }
            ],
        }
    )
    names = {euid: f"user{i}" for i, euid in enumerate(backend.euids)}
    inventory = Inventory(
        users={
            n: MeshUser.model_validate({"kind": "meshUser", "metadata": {"name": n}, "spec": {"euid": euid}})
            for euid, n in names.items()
        },
        workspaces={
            workspace: MeshWorkspace.model_validate(
                {"kind": "meshWorkspace", "metadata": {"name": workspace}}
            )
        },
        projects={
            (workspace, project): MeshProject.model_validate(
                {"kind": "meshProject", "metadata": {"name": project, "ownedByWorkspace": workspace}}
            )
        },
        bindings=(
            MeshProjectBinding.model_validate(
                {
                    "kind": "meshProjectBinding",
                    "metadata": {"ownedByWorkspace": workspace, "ownedByProject": project},
                    "spec": {"role": ALIAS, "subjects": [{"user": names[e]} for e in euids]},
                }
            ),
        )
        if euids
        else (),
        tenants={
            tenant.key: MeshTenant.model_validate(
                {
                    "kind": "meshTenant",
                    "metadata": {
                        "ownedByWorkspace": workspace,
                        "ownedByProject": project,
                        "platformIdentifier": tenant.platform,
                    },
                    "spec": {"localId": tenant.local_id, "landingZoneIdentifier": "lz"},
                }
            )
        },
    )
    caps = type(capabilities).capabilities_for(capabilities.options)
    return Validated(config, inventory, {tenant.platform: caps})


async def reconcile(
    backend: Backend, make_driver: MakeDriver, store: Store, euids: tuple[str, ...], budget: RecordingBudget
) -> RunReport:
    """One engine run (apply on) of the adapter's tenant, with the adapter's driver and ``budget``."""

    def driver_for(platform: object) -> Driver:
        driver = make_driver()
        driver.budget = budget
        return driver

    engine = Engine(validated(backend, make_driver(), euids), store, retry_wait=0.0, make_driver=driver_for)
    now = datetime.now(UTC)
    return await engine.run(engine.select(now), apply=True, now=now)


def store_at(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'state.db'}")


async def test_a_failed_observation_fails_the_run_and_removes_nothing(
    backend: Backend, make_driver: MakeDriver, tmp_path: Path
) -> None:
    store = store_at(tmp_path)
    first = await reconcile(backend, make_driver, store, backend.euids, RecordingBudget())
    assert first.failed == [], [r.error for r in first.failed]
    ((record,),) = [store.owned_groups(backend.tenant.platform, backend.tenant.key)]
    assert record.platform_id
    name, gid = record.name, record.platform_id
    alice, bob = await users(make_driver(), backend)
    assert backend.members(name, gid) == {alice.id, bob.id}
    assert backend.roles(name, gid) == {backend.role}

    backend.fail_observation()  # and bob is no longer bound: the plan would remove him
    second = await reconcile(backend, make_driver, store, backend.euids[:1], RecordingBudget())
    assert [r.key for r in second.failed] == [backend.tenant.key]
    assert backend.fault_fired()
    assert backend.members(name, gid) == {alice.id, bob.id}, "nothing removed"
    assert backend.roles(name, gid) == {backend.role}, "nothing revoked"


# --- throttling ---------------------------------------------------------------------------------


async def test_retry_after_pauses_the_budget_and_the_change_succeeds(
    backend: Backend, make_driver: MakeDriver
) -> None:
    driver = make_driver()
    budget = RecordingBudget()
    driver.budget = budget
    name = backend.group_name(ALIAS)
    alice, _ = await users(driver, backend)
    await observe_first(driver, backend)
    gid = await driver.apply(backend.tenant, change(backend, Action.CREATE_GROUP), None)
    assert gid
    await driver.apply(backend.tenant, change(backend, Action.GRANT, role=backend.role), gid)

    backend.throttle_member_write()
    add = change(backend, Action.ADD_MEMBER, user=alice)
    refused: RetryableError | None = None
    try:
        await driver.apply(backend.tenant, add, gid)  # the driver may wait and repeat by itself
    except RetryableError as e:
        refused = e
    if refused is not None:  # or it says how long to wait, and the repeat succeeds
        assert refused.retry_after == pytest.approx(RETRY_AFTER)
        await driver.apply(backend.tenant, add, gid)
    assert backend.fault_fired()
    assert budget.pauses == [pytest.approx(RETRY_AFTER)]
    assert backend.members(name, gid) == {alice.id}


async def test_retry_after_through_the_engine(
    backend: Backend, make_driver: MakeDriver, tmp_path: Path
) -> None:
    budget = RecordingBudget()
    backend.throttle_member_write()
    report = await reconcile(backend, make_driver, store_at(tmp_path), backend.euids[:1], budget)
    assert report.failed == [], [r.error for r in report.failed]
    assert backend.fault_fired()
    assert budget.pauses == [pytest.approx(RETRY_AFTER)]
    ((record,),) = [store_at(tmp_path).owned_groups(backend.tenant.platform, backend.tenant.key)]
    assert record.platform_id
    alice, _ = await users(make_driver(), backend)
    assert backend.members(record.name, record.platform_id) == {alice.id}
    assert backend.roles(record.name, record.platform_id) == {backend.role}
