"""AzureDriver against the local Graph v1.0 + ARM + token server (``tests.support.azure_server``).

The real SDKs run unmodified over HTTPS: azure-identity's ClientSecretCredential (MSAL) fetches a
token from the server's token endpoint, msgraph-sdk calls Graph, azure-mgmt-authorization calls
ARM. Every result is read back from the server's state, never through the driver.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from platforms.azure import (
    AzureDriver,
    AzureOptions,
    assignment_name,
    mail_nickname,
    odata_string,
)
from platforms.contract import (
    Action,
    Change,
    ForeignObjectError,
    OwnedGroup,
    PendingError,
    PermanentError,
    PlatformConfigError,
    PlatformUser,
    RetryableError,
    TenantRef,
)
from tests.integration.conftest import RecordingBudget, assert_import_loads_no_sdk, closing_drivers, marker
from tests.support.azure_server import (
    CLIENT_ID,
    CLIENT_SECRET,
    MSI_HEADER,
    AzureServer,
    client_certificate,
    federated_token,
)
from tests.support.local_server import free_port

pytestmark = pytest.mark.integration

PLATFORM = "azure.test"
SUB = "0b1f6d2c-3a4e-4c5d-8e9f-1a2b3c4d5e6f"
SCOPE = f"/subscriptions/{SUB}"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
ADMIN = "acme.web-admin"
SECRET_ENV = "AZURE_TEST_SECRET"

MakeDriver = Callable[..., AzureDriver]


@pytest.fixture
def azure(azure_server: AzureServer, monkeypatch: pytest.MonkeyPatch) -> AzureServer:
    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)
    azure_server.reset()
    azure_server.page_size = 100
    azure_server.arm_page_size = 50
    return azure_server


@pytest.fixture
def tenant() -> TenantRef:
    return TenantRef(f"acme/web/{PLATFORM}", PLATFORM, SUB)


@pytest.fixture
async def make_driver(azure: AzureServer) -> AsyncIterator[MakeDriver]:
    async with closing_drivers(lambda **extra: AzureDriver(PLATFORM, azure.driver_options(**extra))) as make:
        yield make


async def create(driver: AzureDriver, tenant: TenantRef, name: str = ADMIN) -> str:
    gid = await driver.apply(tenant, Change(Action.CREATE_GROUP, name, "admin"), None)
    assert gid is not None
    return gid


# --- options, capabilities, pure helpers ---------------------------------------------------------


def test_import_does_not_load_the_sdks() -> None:
    sdk = ("msgraph", "msgraph_core", "kiota_http", "kiota_abstractions", "azure", "msal", "httpx")
    assert_import_loads_no_sdk("platforms.registry", "azure", sdk)


def test_options_resolve_the_lookup_strategy_and_capabilities() -> None:
    from replicator.core.config import ReplicationConfig

    base = {"tenantId": "t", "credentials": {"clientId": "c", "clientSecret": {"env": "X"}}}
    assert AzureOptions.model_validate(base).lookup_attribute == "mail"
    by_upn = ReplicationConfig(aad_user_lookup_strategy="UserByUsernameLookupStrategy")
    opts = AzureOptions.model_validate(base, context={"replication": by_upn})
    assert opts.user_lookup_strategy == "UserByUsernameLookupStrategy"
    assert AzureDriver.capabilities_for(opts).lookup_attribute == "userPrincipalName"
    assert AzureDriver.capabilities_for(opts).ensures_users is False
    explicit = {**base, "userLookupStrategy": "UserByMailLookupStrategy"}
    assert AzureOptions.model_validate(explicit, context={"replication": by_upn}).lookup_attribute == "mail"
    guests = AzureOptions.model_validate({**base, "b2bGuestInvitation": {"enabled": True}})
    assert AzureDriver.capabilities_for(guests).ensures_users is True
    assert AzureDriver.capabilities.external_grants_default == "remove"
    for other in (
        {"certificateFile": "/c.pem", "clientId": "c"},
        {"workloadIdentity": {}},
        {"managedIdentity": {"clientId": "x"}},
    ):
        assert AzureOptions.model_validate({**base, "credentials": other}).credentials
    with pytest.raises(ValueError, match="subscriptionId"):
        AzureOptions.model_validate({**base, "scope": "resourceGroup"})
    with pytest.raises(ValueError, match="bogus"):
        AzureOptions.model_validate({**base, "bogus": 1})
    with pytest.raises(ValueError, match="clientSecret"):
        AzureOptions.model_validate({**base, "credentials": {"clientId": "c", "clientSecret": "literal"}})
    with pytest.raises(PlatformConfigError):
        AzureDriver(PLATFORM, {"tenantId": "t"})
    schema = AzureOptions.model_json_schema(by_alias=True)
    assert schema["properties"]["userLookupStrategy"]["description"].startswith("User attribute")


def test_roles_names_and_literals() -> None:
    caps = AzureDriver.capabilities
    assert caps.check_role(READER) is None
    full = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{READER}"
    assert caps.check_role(full) is None
    assert caps.check_role("Reader") is not None
    assert caps.check_role("arn:aws:sso:::permissionSet/x") is not None
    assert caps.check_group_name("a" * 256) is None
    assert caps.check_group_name("a" * 257) is not None
    assert caps.check_group_name("tab\there") is not None
    assert odata_string("o'neil@example.com") == "'o''neil@example.com'"
    for name in ("finance.ledger-admin", "Ünïcode (test) [x] a@b; c:d <e>, f", "x" * 200):
        nick = mail_nickname(name)
        assert len(nick) <= 64
        assert all(33 <= ord(ch) <= 126 and ch not in '@()\\[]";:<>,' for ch in nick), nick
    assert mail_nickname("finance.ledger-admin") == "finance.ledger-admin"
    assert mail_nickname("a b") != mail_nickname("a,b")
    assert assignment_name(SCOPE, "g", READER) == assignment_name(SCOPE.upper(), "G", full.upper())
    assert assignment_name(SCOPE, "g", READER) != assignment_name(SCOPE, "g", OWNER)


# --- credentials ---------------------------------------------------------------------------------


async def test_secret_problems_are_config_errors_without_the_value(
    azure: AzureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV)
    driver = AzureDriver(PLATFORM, azure.driver_options())
    with pytest.raises(PlatformConfigError, match=SECRET_ENV):
        await driver.lookup_users(["x@example.com"])
    await driver.close()
    monkeypatch.setenv(SECRET_ENV, "wrong-secret-4711")
    driver = AzureDriver(PLATFORM, azure.driver_options())
    with pytest.raises(PlatformConfigError) as info:
        await driver.lookup_users(["x@example.com"])
    await driver.close()
    assert "wrong-secret-4711" not in str(info.value)
    assert azure.count("graph") == 0  # nothing reached Graph without a token


async def test_certificate_credential_signs_in(
    azure: AzureServer, tmp_path: Path, make_driver: MakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = client_certificate(tmp_path)
    monkeypatch.setenv("AZURE_TEST_CERT", pem.read_text())
    azure.add_user("alice@example.com")
    for credentials in (
        {"clientId": CLIENT_ID, "certificateFile": str(pem)},
        {"clientId": CLIENT_ID, "certificate": {"env": "AZURE_TEST_CERT"}},
    ):
        driver = make_driver(credentials=credentials)
        found = await driver.lookup_users(["alice@example.com"])
        assert [u.name for u in found["alice@example.com"]] == ["alice@example.com"]
        assert azure.token_requests[-1]["client_assertion_type"].endswith("jwt-bearer")
    assert len(azure.token_requests) == 2
    both = {"clientId": "c", "certificate": {"env": "X"}, "certificateFile": "f"}
    with pytest.raises(ValueError, match="exactly one"):
        AzureOptions.model_validate({"tenantId": "t", "credentials": both})


async def test_workload_identity_signs_in_with_the_projected_token(
    azure: AzureServer, tmp_path: Path, make_driver: MakeDriver
) -> None:
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(federated_token())
    workload = {"workloadIdentity": {"clientId": CLIENT_ID, "tokenFile": str(token_file)}}
    azure.add_user("alice@example.com")
    found = await make_driver(credentials=workload).lookup_users(["alice@example.com"])
    assert len(found["alice@example.com"]) == 1
    assert azure.token_requests[-1]["client_assertion"] == token_file.read_text()
    token_file.write_text(federated_token(issuer="https://somewhere.else"))
    with pytest.raises(PlatformConfigError, match="AADSTS70021"):
        await make_driver(credentials=workload).lookup_users(["bob@example.com"])


async def test_managed_identity_signs_in_through_the_app_service_endpoint(
    azure: AzureServer, make_driver: MakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{azure.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", MSI_HEADER)
    azure.add_user("alice@example.com")
    driver = make_driver(credentials={"managedIdentity": {}})
    found = await driver.lookup_users(["alice@example.com"])
    assert len(found["alice@example.com"]) == 1
    assert azure.token_requests == [{"managed_identity": f"{azure.url}"}]


# --- lookup --------------------------------------------------------------------------------------


async def test_lookup_by_mail_batched_case_insensitive_cached(
    azure: AzureServer, driver: AzureDriver
) -> None:
    ids = {f"user{i:02d}@example.com": azure.add_user(f"User{i:02d}@Example.com") for i in range(40)}
    quoted = azure.add_user("o'neil@example.com")
    twin_a = azure.add_user("twin@example.com", upn="twin.a@example.com")
    twin_b = azure.add_user("TWIN@example.com", upn="twin.b@example.com")
    euids = [*ids, "o'neil@example.com", "twin@example.com", "nobody@example.com"]
    found = await driver.lookup_users(euids)
    assert {e: [u.id for u in found[e]] for e in ids} == {e: [i] for e, i in ids.items()}
    assert found["user07@example.com"][0].name == "User07@Example.com"  # the platform's spelling
    assert [u.id for u in found["o'neil@example.com"]] == [quoted]
    assert sorted(u.id for u in found["twin@example.com"]) == sorted([twin_a, twin_b])
    assert found["nobody@example.com"] == ()
    assert azure.count("graph", "GET", "^/v1.0/users$") == 3  # 43 values, 15 a request
    assert driver.api_calls["list_users"] == 3
    again = await driver.lookup_users(["USER01@example.com", "nobody@example.com"])
    assert [u.id for u in again["USER01@example.com"]] == [ids["user01@example.com"]]
    assert azure.count("graph", "GET", "^/v1.0/users$") == 3  # cached in the instance


async def test_lookup_by_user_principal_name(azure: AzureServer, make_driver: MakeDriver) -> None:
    driver = make_driver(userLookupStrategy="UserByUsernameLookupStrategy")
    jane = azure.add_user("jane.doe@corp.example", upn="JDoe@corp.example")
    azure.add_user("jdoe@corp.example", upn="john@corp.example")  # same mail-ish key, other upn
    found = await driver.lookup_users(["jdoe@corp.example"])
    assert [(u.id, u.name) for u in found["jdoe@corp.example"]] == [(jane, "JDoe@corp.example")]


# --- groups --------------------------------------------------------------------------------------


async def test_create_group_marked_security_enabled_idempotent(
    azure: AzureServer, driver: AzureDriver, tenant: TenantRef
) -> None:
    gid = await create(driver, tenant)
    group = azure.group(gid)
    assert group["displayName"] == ADMIN
    assert group["description"] == marker(tenant)
    assert group["securityEnabled"] is True
    assert group["mailEnabled"] is False
    assert group["mailNickname"] == ADMIN
    assert await create(driver, tenant) == gid
    assert azure.groups()[ADMIN] == [gid]


async def test_create_group_with_odd_name_and_in_an_administrative_unit(
    azure: AzureServer, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    driver = make_driver(administrativeUnitId="au-1")
    name = "Fïnance (EU): ledger, admin's"
    gid = await create(driver, tenant, name)
    assert azure.group(gid)["displayName"] == name
    assert azure.state.unit_members["au-1"] == [gid]
    assert await create(driver, tenant, name) == gid  # found again by name (quote doubled)


async def test_foreign_group_names_are_refused_and_ours_preferred(
    azure: AzureServer, driver: AzureDriver, tenant: TenantRef
) -> None:
    azure.add_group(ADMIN, "made by hand")
    with pytest.raises(ForeignObjectError, match="not ours"):
        await create(driver, tenant)
    other = TenantRef("acme/other/azure.test", PLATFORM, SUB)
    azure.add_group("acme.web-user", marker(other))
    with pytest.raises(ForeignObjectError):
        await create(driver, tenant, "acme.web-user")
    ours = azure.add_group("acme.web-user", marker(tenant))  # Entra ID allows the same name twice
    assert await create(driver, tenant, "acme.web-user") == ours


async def test_add_and_remove_member_twice(
    azure: AzureServer, driver: AzureDriver, tenant: TenantRef
) -> None:
    gid = await create(driver, tenant)
    alice = PlatformUser(azure.add_user("alice@example.com"), "alice@example.com")
    for _ in range(2):
        await driver.apply(tenant, Change(Action.ADD_MEMBER, ADMIN, "admin", user=alice), gid)
    assert azure.members(gid) == [alice.id]
    for _ in range(2):
        await driver.apply(tenant, Change(Action.REMOVE_MEMBER, ADMIN, "admin", user=alice), gid)
    assert azure.members(gid) == []


# --- the real service's lag, limits and visibility (docs/azure.md, "How the real service behaves")


def recorded(gid: str, name: str = ADMIN, alias: str = "admin", age: float = 0.0) -> OwnedGroup:
    """The store's record of a group created ``age`` seconds ago."""
    return OwnedGroup(alias, name, gid, created_at=datetime.now(UTC) - timedelta(seconds=age))


async def test_a_group_created_a_moment_ago_is_pending_not_vanished_under_read_lag(
    azure: AzureServer, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    """Graph's replicas lag its writes: a group created a moment ago may be missing from the
    ``id in (...)`` read and from GET by id. A recorded young group is therefore pending, never
    vanished (vanished makes the store forget it and the next plan create it again: a duplicate).
    A new driver (the next run, another process) knows the group's age from the store's record."""
    azure.lag = 3600  # until catch_up()
    gid = await create(make_driver(), tenant)
    for _ in range(2):  # two runs in a row, each with a fresh driver as a new process would have
        with pytest.raises(PendingError, match="not visible") as info:
            await make_driver().observe(tenant, [recorded(gid, age=5)], {"admin": ADMIN})
        assert info.value.retry_after == 1  # pendingRetryAfter (driver_options)
    assert azure.groups()[ADMIN] == [gid]
    azure.catch_up()
    observed = await make_driver().observe(tenant, [recorded(gid, age=5)], {"admin": ADMIN})
    assert [g.id for g in observed.groups] == [gid]
    assert observed.vanished == ()


async def test_a_recorded_group_gone_for_longer_than_the_window_has_vanished(
    azure: AzureServer, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    azure.lag = 3600
    gid = await create(make_driver(), tenant)
    old = recorded(gid, age=901)  # consistencyWindow 900 s: lag explains no longer
    observed = await make_driver().observe(tenant, [old], {"admin": ADMIN})
    assert observed.vanished == (ADMIN,)
    observed = await make_driver().observe(tenant, [OwnedGroup("admin", ADMIN, gid)], {"admin": ADMIN})
    assert observed.vanished == (ADMIN,)  # a record of unknown age: as before


async def test_add_member_waits_out_404_and_400_for_new_objects_then_is_pending(
    azure: AzureServer, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    """``members/$ref`` answers 404 for a group and 400 "do not exist" for a member that a replica
    does not know yet; both are retried, and past the attempts a young object is pending."""
    driver = make_driver(b2bGuestInvitation={"enabled": True}, consistencyWait=0.1, consistencyAttempts=12)
    azure.lag = 1.5  # well above the time between a create and the next request, even on a busy machine
    gid = await create(driver, tenant)
    alice = PlatformUser(azure.add_user("alice@example.com"), "alice@example.com")
    await driver.apply(tenant, Change(Action.ADD_MEMBER, ADMIN, "admin", user=alice), gid)
    assert azure.members(gid) == [alice.id]
    assert driver.api_calls["add_member"] > 1  # the group was unknown (404) at first
    old = azure.add_group("acme.web-user", marker(tenant))  # known everywhere
    guest_id = await driver.apply(
        tenant, Change(Action.ENSURE_USER, "acme.web-user", "user", euid="g@x.example"), None
    )
    assert guest_id is not None
    guest = PlatformUser(guest_id, "g@x.example")
    driver.api_calls.clear()
    await driver.apply(tenant, Change(Action.ADD_MEMBER, "acme.web-user", "user", user=guest), old)
    assert azure.members(old) == [guest_id]
    assert driver.api_calls["add_member"] > 1  # the new guest was unknown (400) at first

    azure.lag = 3600
    driver = make_driver()  # consistencyWait 0.01, 5 attempts
    late = await create(driver, tenant, "acme.web-reader")
    with pytest.raises(PendingError, match="not visible") as info:
        await driver.apply(tenant, Change(Action.ADD_MEMBER, "acme.web-reader", "reader", user=alice), late)
    assert info.value.retry_after == 1
    assert azure.members(late) == []


async def test_add_member_to_an_old_group_it_cannot_find_is_retryable_not_pending(
    azure: AzureServer, driver: AzureDriver, tenant: TenantRef
) -> None:
    """The lag explains nothing for objects we did not just create: not pending (which would
    requeue for ever), retryable (the tenant fails for this run, the lookups are asked again)."""
    gid = azure.add_group(ADMIN, marker(tenant))
    ghost = PlatformUser(str(uuid.uuid4()), "ghost@example.com")  # deleted since the lookup
    with pytest.raises(RetryableError, match="not visible") as info:
        await driver.apply(tenant, Change(Action.ADD_MEMBER, ADMIN, "admin", user=ghost), gid)
    assert not isinstance(info.value, PendingError)


async def test_grant_to_a_new_group_names_its_type_and_is_pending_while_arm_lags(
    azure: AzureServer, driver: AzureDriver, tenant: TenantRef
) -> None:
    """ARM answers PrincipalNotFound for a new principal for seconds to minutes; the driver sends
    ``principalType: Group`` (ARM checks it: a wrong one is UnmatchedPrincipalType) and, past its
    attempts, reports the grant pending with a retry_after instead of failing the tenant."""
    azure.arm_lag = 3600
    gid = await create(driver, tenant)
    grant = Change(Action.GRANT, ADMIN, "admin", role=READER)
    with pytest.raises(PendingError, match="PrincipalNotFound") as info:
        await driver.apply(tenant, grant, gid)
    assert info.value.retry_after == 1
    assert azure.roles(gid, SCOPE) == []
    azure.catch_up()
    await driver.apply(tenant, grant, gid)
    (assignment,) = azure.assignments(gid, SCOPE)
    assert assignment["properties"]["principalType"] == "Group"


async def test_group_names_over_120_characters_are_found_by_mail_nickname(
    azure: AzureServer, driver: AzureDriver, tenant: TenantRef
) -> None:
    """Graph's displayName filter takes at most 120 characters (400 Request_UnsupportedQuery);
    names may have 256. A long name is looked up by its mailNickname and compared exactly."""
    name = "acme.web-" + "x" * 200 + "-admin"
    gid = await create(driver, tenant, name)
    assert await create(driver, tenant, name) == gid
    assert azure.groups()[name] == [gid]
    assert azure.group(gid)["mailNickname"] == mail_nickname(name)
    observed = await driver.observe(tenant, [], {"admin": name})  # a name no record has
    assert [g.id for g in observed.groups] == [gid]
    twin = name[:-1] + "X"  # the same first 120 characters, another group
    assert await create(driver, tenant, twin) != gid
    await driver.apply(tenant, Change(Action.DELETE_GROUP, name, "admin"), None)
    assert name not in azure.groups()
    assert twin in azure.groups()


async def test_group_names_with_slashes_quotes_and_spaces_get_valid_distinct_nicknames(
    azure: AzureServer, driver: AzureDriver, tenant: TenantRef
) -> None:
    """mailNickname: ASCII without @ () \\ [] " ; : <> , and space, at most 64 (the server refuses
    anything else); distinct names get distinct nicknames, the same name always the same."""
    names = ["team a/b", "team a-b", "team-a-b", "o'brien team", "Team A/B", "team (a) b", "Zoë's team"]
    ids = [await create(driver, tenant, n) for n in names]
    nicks = [azure.group(gid)["mailNickname"] for gid in ids]
    assert len({n.lower() for n in nicks}) == len(names)
    assert nicks == [mail_nickname(n) for n in names]
    assert [await create(driver, tenant, n) for n in names] == ids


async def test_an_address_of_a_member_is_not_invited_the_member_is_used(
    azure: AzureServer, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    """Graph refuses to invite an address that belongs to a member of the directory; the driver
    asks by mail, otherMails and userPrincipalName first and uses whoever holds the address."""
    driver = make_driver(b2bGuestInvitation={"enabled": True})
    jane = azure.add_user("jane.doe@corp.example", upn="jane@corp.example", other_mails=("jd@home.example",))
    for address in ("jane@corp.example", "JD@home.example"):
        assert (await driver.lookup_users([address]))[address] == ()  # not found by mail
        uid = await driver.apply(tenant, Change(Action.ENSURE_USER, ADMIN, "admin", euid=address), None)
        assert uid == jane
    assert azure.state.invitations == []
    assert await driver.apply(tenant, Change(Action.ENSURE_USER, ADMIN, "admin", euid="new@x.example"), None)
    assert [i["invitedUserEmailAddress"] for i in azure.state.invitations] == ["new@x.example"]


async def test_throttling_per_app_and_tenant_is_waited_out_through_the_budget(
    azure: AzureServer, driver: AzureDriver, tenant: TenantRef
) -> None:
    """Graph throttles per app and tenant: every request answers 429 until the window ends. Each
    call honours Retry-After (pausing the shared budget) rather than hammering."""
    budget = RecordingBudget()
    driver.budget = budget
    azure.add_user("alice@example.com")
    azure.throttle_app(0.5)
    found = await driver.lookup_users(["alice@example.com"])
    assert len(found["alice@example.com"]) == 1
    assert budget.pauses == [1.0]  # Retry-After: 1 (whole seconds), once
    assert azure.count("graph", "GET", "^/v1.0/users$") == 2


# --- role assignments ----------------------------------------------------------------------------


async def test_grant_and_revoke_exact_assignments(
    azure: AzureServer, driver: AzureDriver, tenant: TenantRef
) -> None:
    gid = await create(driver, tenant)
    other = azure.add_group("someone-else", "made by hand")
    azure.add_assignment(SCOPE, other, READER)
    by_hand = azure.add_assignment(SCOPE, gid, OWNER)  # our group, the role we are about to grant
    for _ in range(2):
        await driver.apply(tenant, Change(Action.GRANT, ADMIN, "admin", role=READER), gid)
        await driver.apply(tenant, Change(Action.GRANT, ADMIN, "admin", role=OWNER), gid)
    assert azure.roles(gid, SCOPE) == sorted([READER, OWNER])
    names = {a["name"] for a in azure.assignments(gid, SCOPE)}
    assert names == {assignment_name(SCOPE, gid, READER), by_hand}  # 409 RoleAssignmentExists: success
    assignment = next(a for a in azure.assignments(gid, SCOPE) if a["name"] != by_hand)
    assert assignment["properties"]["principalType"] == "Group"
    assert assignment["properties"]["roleDefinitionId"].endswith(f"/roleDefinitions/{READER}")
    for _ in range(2):
        await driver.apply(tenant, Change(Action.REVOKE, ADMIN, "admin", role=OWNER), gid)
    assert azure.roles(gid, SCOPE) == [READER]
    assert azure.roles(other, SCOPE) == [READER]  # someone else's assignment of a role we revoke stays
    await driver.apply(tenant, Change(Action.REVOKE, ADMIN, "admin", role=READER), gid)
    assert azure.roles(gid, SCOPE) == []
    assert azure.roles(other, SCOPE) == [READER]


async def test_resource_group_scope_leaves_inherited_assignments_alone(
    azure: AzureServer, make_driver: MakeDriver
) -> None:
    driver = make_driver(scope="resourceGroup", subscriptionId=SUB)
    rg = TenantRef(f"acme/web/{PLATFORM}", PLATFORM, "rg-web")
    rg_scope = f"{SCOPE}/resourceGroups/rg-web"
    gid = await create(driver, rg)
    azure.add_assignment(SCOPE, gid, OWNER)  # on the subscription: inherited, not the tenant's
    await driver.apply(rg, Change(Action.GRANT, ADMIN, "admin", role=READER), gid)
    observed = await driver.observe(rg, [OwnedGroup("admin", ADMIN, gid)], {"admin": ADMIN})
    assert observed.groups[0].roles == frozenset({READER})
    await driver.apply(rg, Change(Action.REVOKE, ADMIN, "admin", role=OWNER), gid)
    assert azure.roles(gid, SCOPE) == [OWNER]
    assert azure.roles(gid, rg_scope) == [READER]


async def test_roles_keep_the_inventory_spelling(
    azure: AzureServer, driver: AzureDriver, tenant: TenantRef
) -> None:
    full = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{READER}"
    gid = await create(driver, tenant)
    await driver.apply(tenant, Change(Action.GRANT, ADMIN, "admin", role=full), gid)
    observed = await driver.observe(tenant, [OwnedGroup("admin", ADMIN, gid, frozenset({full}))], {})
    assert observed.groups[0].roles == frozenset({full})
    # The plan may revoke the other spelling of a role it just granted: that revoke keeps it.
    await driver.apply(tenant, Change(Action.REVOKE, ADMIN, "admin", role=READER), gid)
    assert azure.roles(gid, SCOPE) == [READER]


# --- observe -------------------------------------------------------------------------------------


async def test_observe_pages_members_and_assignments_to_the_end(
    azure: AzureServer, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    driver = make_driver(pageSize=100)
    azure.arm_page_size = 2
    gid = await create(driver, tenant)
    users = [azure.add_user(f"u{i:03d}@example.com") for i in range(250)]
    for uid in users:
        azure.add_member(gid, uid)
    nested = azure.add_group("nested", "made by hand")
    azure.add_member(gid, nested)
    for role in (READER, OWNER, CONTRIBUTOR):
        azure.add_assignment(SCOPE, gid, role)
    observed = await driver.observe(tenant, [OwnedGroup("admin", ADMIN, gid)], {"admin": ADMIN})
    (group,) = observed.groups
    assert len(group.members) == 251
    assert PlatformUser(users[0], "u000@example.com") in group.members
    assert PlatformUser(nested, nested) in group.members  # a nested group: unmanaged, reported by id
    assert group.roles == frozenset({READER, OWNER, CONTRIBUTOR})
    assert driver.api_calls["list_members"] == 3
    assert driver.api_calls["list_role_assignments"] == 2


async def test_observe_vanished_foreign_pending_and_cost(
    azure: AzureServer, driver: AzureDriver, tenant: TenantRef
) -> None:
    gid = await create(driver, tenant)
    gone = await create(driver, tenant, "acme.web-gone")
    await driver.apply(tenant, Change(Action.DELETE_GROUP, "acme.web-gone", "gone"), gone)
    pending = azure.add_group("acme.web-user", marker(tenant))  # a create never confirmed
    azure.add_group("acme.web-reader", "made by hand")
    driver.api_calls.clear()
    azure.requests.clear()
    observed = await driver.observe(
        tenant,
        [
            OwnedGroup("admin", ADMIN, gid),
            OwnedGroup("gone", "acme.web-gone", gone),
            OwnedGroup("user", "acme.web-user", None),
        ],
        {"admin": ADMIN, "user": "acme.web-user", "reader": "acme.web-reader"},
    )
    assert sorted(g.id for g in observed.groups) == sorted([gid, pending])
    assert observed.vanished == ("acme.web-gone",)
    assert set(observed.foreign) == {"acme.web-reader"}
    assert azure.count() == driver.api_calls.total()

    driver.api_calls.clear()
    await driver.observe(tenant, [OwnedGroup("admin", ADMIN, gid)], {"admin": ADMIN})
    assert driver.api_calls == {"list_groups": 1, "list_members": 1, "list_role_assignments": 1}


async def test_observe_reads_groups_in_batches_and_the_scope_once(
    azure: AzureServer, driver: AzureDriver, tenant: TenantRef
) -> None:
    """G recorded groups: one groups request per 15 ids, the members of each, ONE list of the
    scope's role assignments; each group gets exactly its own assignments on exactly the scope."""
    ids = [azure.add_group(f"acme.web-g{i:02d}", marker(tenant)) for i in range(17)]
    owned = [OwnedGroup(f"g{i:02d}", f"acme.web-g{i:02d}", gid) for i, gid in enumerate(ids)]
    azure.add_assignment(SCOPE, ids[0], READER)
    azure.add_assignment(SCOPE, ids[1], OWNER)
    azure.add_assignment(f"{SCOPE}/resourceGroups/rg-below", ids[2], READER)  # below: not the tenant's
    azure.add_assignment(SCOPE, azure.add_group("someone-else", None), READER)  # another principal
    observed = await driver.observe(tenant, owned, {o.alias: o.name for o in owned})
    roles = {g.id: g.roles for g in observed.groups}
    assert set(roles) == set(ids)
    assert roles[ids[0]] == frozenset({READER})
    assert roles[ids[1]] == frozenset({OWNER})
    assert all(roles[gid] == frozenset() for gid in ids[2:])
    assert driver.api_calls == {"list_groups": 2, "list_members": 17, "list_role_assignments": 1}
    assert azure.count("graph", "GET", r"^/v1.0/groups/[^/]+$") == 0  # no get_group left
    assert azure.count("graph") + azure.count("arm") == driver.api_calls.total()  # tokens apart


async def test_observe_recorded_group_without_our_marker_is_foreign_and_gone_is_vanished(
    azure: AzureServer, driver: AzureDriver, tenant: TenantRef
) -> None:
    """The batched groups read still proves the marker: a recorded group whose description was
    edited by hand is foreign (never changed), a deleted one vanished (recreated by the plan)."""
    kept = await create(driver, tenant)
    edited = await create(driver, tenant, "acme.web-user")
    deleted = await create(driver, tenant, "acme.web-reader")
    azure.set_description(edited, "taken over by hand")
    await driver.apply(tenant, Change(Action.DELETE_GROUP, "acme.web-reader", "reader"), deleted)
    driver.api_calls.clear()
    observed = await driver.observe(
        tenant,
        [
            OwnedGroup("admin", ADMIN, kept),
            OwnedGroup("user", "acme.web-user", edited),
            OwnedGroup("reader", "acme.web-reader", deleted),
        ],
        {"admin": ADMIN, "user": "acme.web-user", "reader": "acme.web-reader"},
    )
    assert [g.id for g in observed.groups] == [kept]
    assert observed.foreign == {"acme.web-user": edited}
    assert observed.vanished == ("acme.web-reader",)
    assert driver.api_calls == {"list_groups": 1, "list_members": 1, "list_role_assignments": 1}


async def test_observe_without_any_group_of_ours_reads_no_assignments(
    azure: AzureServer, driver: AzureDriver, tenant: TenantRef
) -> None:
    gone = str(uuid.uuid4())
    observed = await driver.observe(tenant, [OwnedGroup("admin", ADMIN, gone)], {"admin": ADMIN})
    assert observed.vanished == (ADMIN,)
    assert driver.api_calls == {"list_groups": 1}


async def test_delete_group_owned_foreign_and_gone(
    azure: AzureServer, driver: AzureDriver, tenant: TenantRef
) -> None:
    gid = await create(driver, tenant)
    foreign = azure.add_group("acme.web-user", "made by hand")
    with pytest.raises(ForeignObjectError):
        await driver.apply(tenant, Change(Action.DELETE_GROUP, "acme.web-user", "user"), foreign)
    with pytest.raises(ForeignObjectError):
        await driver.apply(tenant, Change(Action.DELETE_GROUP, "acme.web-user", "user"), None)
    for _ in range(2):
        await driver.apply(tenant, Change(Action.DELETE_GROUP, ADMIN, "admin"), gid)
    assert ADMIN not in azure.groups()
    assert azure.groups()["acme.web-user"] == [foreign]


# --- throttling ----------------------------------------------------------------------------------


async def test_short_retry_after_is_waited_out_with_the_budget_paused(
    azure: AzureServer, driver: AzureDriver, tenant: TenantRef
) -> None:
    budget = RecordingBudget()
    driver.budget = budget
    azure.add_user("alice@example.com")
    azure.throttle("GET", "^/v1.0/users$", count=2, retry_after="0.05")
    found = await driver.lookup_users(["alice@example.com"])
    assert len(found["alice@example.com"]) == 1
    assert budget.pauses == [0.05, 0.05]
    assert driver.api_calls["list_users"] == 3
    gid = await create(driver, tenant)
    azure.throttle("PUT", "roleAssignments", count=1, status=503, retry_after="0.05")
    await driver.apply(tenant, Change(Action.GRANT, ADMIN, "admin", role=READER), gid)
    assert azure.roles(gid, SCOPE) == [READER]
    assert budget.pauses == [0.05, 0.05, 0.05]
    assert budget.entered == driver.api_calls.total()


async def test_long_retry_after_is_retryable_not_a_failure(
    azure: AzureServer, driver: AzureDriver, tenant: TenantRef
) -> None:
    budget = RecordingBudget()
    driver.budget = budget
    azure.throttle("GET", "^/v1.0/users$", retry_after="3600")
    with pytest.raises(RetryableError) as info:
        await driver.lookup_users(["alice@example.com"])
    assert info.value.retry_after == 3600
    assert budget.pauses == [3600]
    assert azure.count("graph", "GET", "^/v1.0/users$") == 1  # not repeated by the SDK either
    gid = await create(driver, tenant)
    azure.throttle("GET", "roleAssignments$", retry_after="600")
    with pytest.raises(RetryableError) as info:
        await driver.observe(tenant, [OwnedGroup("admin", ADMIN, gid)], {})
    assert info.value.retry_after == 600


async def test_throttled_without_end_gives_up_retryable(
    azure: AzureServer, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    driver = make_driver(throttleAttempts=2)
    azure.throttle("POST", "^/v1.0/groups$", count=5, retry_after="0.01")
    with pytest.raises(RetryableError, match="throttled"):
        await create(driver, tenant)
    assert azure.count("graph", "POST", "^/v1.0/groups$") == 2
    assert ADMIN not in azure.groups()


# --- B2B guests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["UserByMailLookupStrategy", "UserByUsernameLookupStrategy"])
async def test_b2b_guest_is_invited_once_and_found_afterwards(
    azure: AzureServer, make_driver: MakeDriver, tenant: TenantRef, strategy: str
) -> None:
    options = {"b2bGuestInvitation": {"enabled": True}, "userLookupStrategy": strategy}
    driver = make_driver(**options)
    assert driver.ensures_users is True
    assert (await driver.lookup_users(["guest@home.example"]))["guest@home.example"] == ()
    invite = Change(Action.ENSURE_USER, ADMIN, "admin", euid="guest@home.example")
    uid = await driver.apply(tenant, invite, None)
    assert uid is not None
    guest = azure.user_by_mail("guest@home.example")
    assert guest is not None
    assert (guest["id"], guest["userType"]) == (uid, "Guest")
    (invitation,) = azure.state.invitations
    assert invitation["sendInvitationMessage"] is False
    assert invitation["inviteRedirectUrl"] == "https://myapps.microsoft.com"
    assert await driver.apply(tenant, invite, None) == uid  # the instance remembers its guest
    assert len(azure.state.invitations) == 1
    assert await make_driver(**options).apply(tenant, invite, None) == uid  # found by its address
    assert len(azure.state.invitations) == 1  # not invited again
    assert [u["id"] for u in azure.state.users.values() if u["mail"] == "guest@home.example"] == [uid]
    found = await make_driver(**options).lookup_users(["Guest@home.example"])
    assert [u.id for u in found["Guest@home.example"]] == [uid]  # a fresh driver finds the guest


async def test_ensure_user_without_b2b_is_permanent(driver: AzureDriver, tenant: TenantRef) -> None:
    assert driver.ensures_users is False
    with pytest.raises(PermanentError, match="b2bGuestInvitation"):
        await driver.apply(tenant, Change(Action.ENSURE_USER, ADMIN, "admin", euid="x@example.com"), None)


# --- errors --------------------------------------------------------------------------------------


async def test_closed_port_is_retryable(azure: AzureServer, tenant: TenantRef) -> None:
    driver = AzureDriver(PLATFORM, azure.driver_options(graphUrl=f"https://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(RetryableError):
            await driver.lookup_users(["x@example.com"])
    finally:
        await driver.close()


async def test_incomplete_changes_are_permanent(driver: AzureDriver, tenant: TenantRef) -> None:
    with pytest.raises(PermanentError, match="no platform id"):
        await driver.apply(tenant, Change(Action.ADD_MEMBER, ADMIN, "admin"), None)
    with pytest.raises(PermanentError, match="names no user"):
        await driver.apply(tenant, Change(Action.ADD_MEMBER, ADMIN, "admin"), "gid")
    with pytest.raises(PermanentError, match="names no role"):
        await driver.apply(tenant, Change(Action.GRANT, ADMIN, "admin"), "gid")
