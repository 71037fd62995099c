"""GcpDriver with the real google-api-python-client (bundled discovery documents) over HTTP against
the local Cloud Identity / Admin SDK / Resource Manager server in ``tests.support.gcp_server``.

No client method is mocked: the driver's requests go through httplib2 to the server, and every
result is read back from the server's state, never through the driver.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

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
from platforms.gcp import GcpDriver, GcpOptions, policy_with
from tests.integration.conftest import RecordingBudget, assert_import_loads_no_sdk, closing_drivers, marker
from tests.support.gcp_server import DOMAIN, Fault, GcpServer

pytestmark = pytest.mark.integration

PLATFORM = "gcp.test"
PROJECT = "acme-web-1"
ADMIN = "acme.web-admin"
READER = "acme.web-reader"
ADMIN_EMAIL = f"{ADMIN}@{DOMAIN}"
READER_EMAIL = f"{READER}@{DOMAIN}"

MakeDriver = Callable[..., GcpDriver]


@pytest.fixture
def gcp(gcp_session: GcpServer) -> GcpServer:
    gcp_session.reset()
    gcp_session.add_project(PROJECT)
    return gcp_session


@pytest.fixture
def tenant() -> TenantRef:
    return TenantRef(f"acme/web/{PLATFORM}", PLATFORM, PROJECT)


@pytest.fixture
async def make_driver(gcp: GcpServer) -> AsyncIterator[MakeDriver]:
    async with closing_drivers(lambda **extra: GcpDriver(PLATFORM, gcp.driver_options(**extra))) as make:
        yield make


async def create(driver: GcpDriver, tenant: TenantRef, name: str = ADMIN, alias: str = "admin") -> str:
    gid = await driver.apply(tenant, Change(Action.CREATE_GROUP, name, alias), None)
    assert gid is not None
    return gid


# --- module, options, capabilities ---------------------------------------------------------------


def test_import_does_not_load_the_google_client() -> None:
    sdk = ("googleapiclient", "google", "httplib2", "google_auth_httplib2")
    assert_import_loads_no_sdk("platforms.registry", "gcp", sdk)


def test_options_camel_case_strict_and_anonymous_only_with_endpoints() -> None:
    opts = GcpOptions.model_validate({"customerId": "C01abc", "domain": "example.com"})
    assert opts.credentials_file is None
    assert opts.user_lookup_strategy == "email"
    assert opts.group_scan_threshold == 20
    base = {"customerId": "C01abc", "domain": "example.com"}
    assert GcpOptions.model_validate({**base, "groupScanThreshold": 0}).group_scan_threshold == 0
    with pytest.raises(ValueError, match="groupScanThreshold"):
        GcpOptions.model_validate({**base, "groupScanThreshold": -1})
    assert GcpOptions.model_validate(
        {"customerId": "C01abc", "domain": "example.com", "credentialsFile": {"env": "GCP_KEY"}}
    ).credentials_file
    assert (
        GcpOptions.model_validate(
            {"customerId": "C01abc", "domain": "example.com", "credentialsFile": "/etc/sa.json"}
        ).credentials_file
        == "/etc/sa.json"
    )
    with pytest.raises(ValueError, match="anonymous"):
        GcpOptions.model_validate(
            {
                "customerId": "C",
                "domain": "example.com",
                "anonymous": True,
                "endpoints": {"admin": "http://x/"},
            }
        )
    with pytest.raises(ValueError, match="bogus"):
        GcpOptions.model_validate({"customerId": "C", "domain": "example.com", "bogus": 1})
    with pytest.raises(ValueError, match="domain"):
        GcpOptions.model_validate({"customerId": "C", "domain": "Example.COM"})
    with pytest.raises(PlatformConfigError):
        GcpDriver(PLATFORM, {"customerId": "C"})
    schema = GcpOptions.model_json_schema(by_alias=True)
    assert {"customerId", "credentialsFile", "userLookupStrategy", "endpoints"} <= set(schema["properties"])
    assert schema["properties"]["domain"]["description"].startswith("The (lowercase) domain")


def test_capabilities_group_names_roles_and_lookup_attribute() -> None:
    caps = GcpDriver.capabilities
    assert caps.external_grants_default == "keep"
    assert caps.check_group_name("finance.ledger-admin") is None
    assert caps.check_group_name("o'brien_team-1") is None
    assert caps.check_group_name("a" * 63) is None
    assert "64 characters" in str(caps.check_group_name("a" * 64))
    for bad in ("Finance.ledger-admin", "a..b", ".admin", "admin.", "a b", "a+b", "a@b"):
        assert caps.check_group_name(bad) is not None, bad
    for good in (
        "roles/editor",
        "roles/compute.instanceAdmin.v1",
        "projects/my-proj-1/roles/deployer",
        "organizations/123456789/roles/auditor.read",
    ):
        assert caps.check_role(good) is None, good
    for bad in ("editor", "roles/", "arn:aws:sso:::permissionSet/x", "projects/x/roles/y"):
        assert "roles/editor" in str(caps.check_role(bad)), bad
    ext = GcpOptions.model_validate(
        {"customerId": "C", "domain": "example.com", "userLookupStrategy": "externalId"}
    )
    assert GcpDriver.capabilities_for(ext).lookup_attribute == "externalIds"
    assert (
        GcpDriver.capabilities_for(GcpOptions.model_validate({"customerId": "C", "domain": "example.com"}))
        == caps
    )


async def test_credentials_problems_are_config_errors_without_the_secret(
    gcp: GcpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    endpoints = gcp.driver_options()["endpoints"]
    base = {"customerId": "C", "domain": DOMAIN, "endpoints": endpoints}
    monkeypatch.delenv("GCP_TEST_KEY", raising=False)
    driver = GcpDriver(PLATFORM, {**base, "credentialsFile": {"env": "GCP_TEST_KEY"}})
    with pytest.raises(PlatformConfigError, match="GCP_TEST_KEY"):
        await driver.lookup_users(["x@example.com"])
    monkeypatch.setenv("GCP_TEST_KEY", "not-json-s3cr3t-value")
    driver = GcpDriver(PLATFORM, {**base, "credentialsFile": {"env": "GCP_TEST_KEY"}})
    with pytest.raises(PlatformConfigError) as info:
        await driver.lookup_users(["x@example.com"])
    assert "s3cr3t" not in str(info.value)
    broken = {
        "type": "service_account",
        "client_email": "x@y",
        "token_uri": "http://127.0.0.1:9/",
        "private_key": "-----BEGIN PRIVATE KEY-----\ns3cr3t-key-material\n-----END PRIVATE KEY-----\n",
    }
    monkeypatch.setenv("GCP_TEST_KEY", json.dumps(broken))
    driver = GcpDriver(PLATFORM, {**base, "credentialsFile": {"env": "GCP_TEST_KEY"}})
    with pytest.raises(PlatformConfigError, match="GCP_TEST_KEY are not usable") as info:
        await driver.lookup_users(["x@example.com"])
    assert "s3cr3t" not in str(info.value)
    monkeypatch.setenv("GCP_TEST_KEY", json.dumps({"type": "impersonated_service_account"}))
    driver = GcpDriver(PLATFORM, {**base, "credentialsFile": {"env": "GCP_TEST_KEY"}})
    with pytest.raises(PlatformConfigError, match="impersonated_service_account"):
        await driver.lookup_users(["x@example.com"])
    driver = GcpDriver(PLATFORM, {**base, "credentialsFile": str(tmp_path / "missing.json")})
    with pytest.raises(PlatformConfigError, match=r"missing\.json"):
        await driver.lookup_users(["x@example.com"])
    assert gcp.world.requests == [], "nothing may be sent without credentials"


def service_account(gcp: GcpServer) -> dict[str, Any]:
    """A service account key whose token endpoint is the local server (a fresh RSA key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "replicator-ci",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "replicator@replicator-ci.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": f"{gcp.url}token",
    }


async def test_service_account_key_file_and_admin_impersonation(
    gcp: GcpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(service_account(gcp)))
    gcp.add_user("alice@example.com")
    endpoints = gcp.driver_options()["endpoints"]
    driver = GcpDriver(
        PLATFORM,
        {
            "customerId": gcp.world.customer,
            "domain": DOMAIN,
            "credentialsFile": {"file": str(key_file)},
            "adminSubject": "admin@example.com",
            "endpoints": endpoints,
        },
    )
    tenant = TenantRef(f"acme/web/{PLATFORM}", PLATFORM, PROJECT)
    assert (await driver.lookup_users(["alice@example.com"]))["alice@example.com"]
    await create(driver, tenant)
    await driver.close()
    seen = dict(gcp.world.authorizations)
    assert seen["/admin/directory/v1/users/alice%40example.com"] == "Bearer token-for-admin@example.com"
    assert seen["/v1/groups"] == "Bearer token-for-replicator@replicator-ci.iam.gserviceaccount.com"
    scopes = {c.get("sub"): c["scope"] for c in gcp.world.tokens}
    assert "admin.directory.user.readonly" in scopes["admin@example.com"]
    assert "cloud-identity.groups" in scopes[None]
    # The same key given as a path, in an environment variable: without adminSubject no impersonation.
    monkeypatch.setenv("GCP_TEST_KEY", key_file.read_text())
    driver = GcpDriver(
        PLATFORM,
        {
            "customerId": gcp.world.customer,
            "domain": DOMAIN,
            "credentialsFile": {"env": "GCP_TEST_KEY"},
            "endpoints": endpoints,
        },
    )
    await driver.lookup_users(["bob@example.com"])
    await driver.close()
    assert gcp.world.authorizations[-1] == (
        "/admin/directory/v1/users/bob%40example.com",
        "Bearer token-for-replicator@replicator-ci.iam.gserviceaccount.com",
    )
    # credentialsFile null: application default credentials (here GOOGLE_APPLICATION_CREDENTIALS).
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    driver = GcpDriver(PLATFORM, {"customerId": gcp.world.customer, "domain": DOMAIN, "endpoints": endpoints})
    await driver.lookup_users(["carol@example.com"])
    await driver.close()
    assert gcp.world.authorizations[-1] == (
        "/admin/directory/v1/users/carol%40example.com",
        "Bearer token-for-replicator@replicator-ci.iam.gserviceaccount.com",
    )


async def test_workload_identity_federation_file(gcp: GcpServer, tmp_path: Path) -> None:
    """An external account configuration (identity pool, file-sourced subject token), as a GKE or
    CI workload uses: the subject token is exchanged at the STS and the access token sent."""
    (tmp_path / "oidc-token").write_text("ci-job-42")
    config = {
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/ci",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": f"{gcp.url}sts",
        "credential_source": {"file": str(tmp_path / "oidc-token")},
    }
    (tmp_path / "wif.json").write_text(json.dumps(config))
    gcp.add_user("alice@example.com")
    driver = GcpDriver(
        PLATFORM,
        {
            "customerId": gcp.world.customer,
            "domain": DOMAIN,
            "credentialsFile": str(tmp_path / "wif.json"),
            "endpoints": gcp.driver_options()["endpoints"],
        },
    )
    assert (await driver.lookup_users(["alice@example.com"]))["alice@example.com"]
    await driver.close()
    assert gcp.world.authorizations == [
        ("/admin/directory/v1/users/alice%40example.com", "Bearer sts-for-ci-job-42")
    ]
    (exchange,) = gcp.world.tokens
    assert exchange["subject_token"] == "ci-job-42"
    assert exchange["audience"] == config["audience"]


# --- users ----------------------------------------------------------------------------------------


async def test_lookup_by_primary_email_case_insensitive_and_memoised(
    gcp: GcpServer, driver: GcpDriver
) -> None:
    gcp.add_user("Alice.Smith@example.com")  # stored lowercase, as Google does
    gcp.add_user("bob@example.com", aliases=("robert@example.com",))
    found = await driver.lookup_users(
        ["alice.smith@example.com", "BOB@example.com", "robert@example.com", "x@y"]
    )
    assert found["alice.smith@example.com"] == (
        PlatformUser("alice.smith@example.com", "alice.smith@example.com"),
    )
    assert [u.id for u in found["BOB@example.com"]] == ["bob@example.com"]
    assert found["robert@example.com"] == (), "an alias is not the primary email"
    assert found["x@y"] == ()
    # x@y is outside the customer's domains: users.get answers 403, the search within the customer 200
    assert dict(driver.api_calls) == {"users.get": 4, "users.list": 1}
    again = await driver.lookup_users(["ALICE.SMITH@EXAMPLE.COM", "x@y"])
    assert again["ALICE.SMITH@EXAMPLE.COM"][0].name == "alice.smith@example.com"
    assert dict(driver.api_calls) == {"users.get": 4, "users.list": 1}


async def test_many_unknown_euids_list_the_directory_page_by_page(
    gcp: GcpServer, make_driver: MakeDriver
) -> None:
    gcp.world.user_page_max = 3
    for i in range(10):
        gcp.add_user(f"user{i}@example.com")
    driver = make_driver(userListThreshold=4)
    wanted = [f"USER{i}@example.com" for i in range(10)] + ["ghost@example.com"]
    found = await driver.lookup_users(wanted)
    assert [found[e][0].id for e in wanted[:10]] == [f"user{i}@example.com" for i in range(10)]
    assert found["ghost@example.com"] == ()
    assert dict(driver.api_calls) == {"users.list": 4}  # 10 users, 3 a page
    assert gcp.calls("GET", r"/users$") == 4
    await driver.lookup_users(["nobody@example.com"])
    assert dict(driver.api_calls) == {"users.list": 4}, "the directory was read whole: no more calls"


async def test_a_user_outside_the_customer_is_not_found_not_a_failed_lookup(
    gcp: GcpServer, driver: GcpDriver
) -> None:
    """users.get of an email outside the customer's domains answers 403 (not 404): that user is not
    found, the others are still looked up; a user of a secondary domain is found."""
    gcp.world.secondary_domains = ("example.org",)
    gcp.add_user("carol@example.org")
    gcp.add_user("dave@example.com")
    found = await driver.lookup_users(["guest@gmail.com", "carol@example.org", "dave@example.com"])
    assert found == {
        "guest@gmail.com": (),
        "carol@example.org": (PlatformUser("carol@example.org", "carol@example.org"),),
        "dave@example.com": (PlatformUser("dave@example.com", "dave@example.com"),),
    }
    assert gcp.calls("GET", r"/users/guest%40gmail\.com$") == 1
    assert dict(driver.api_calls) == {"users.get": 3, "users.list": 1}


async def test_lookup_by_external_id(gcp: GcpServer, make_driver: MakeDriver) -> None:
    gcp.add_user("carol@example.com", external_ids=("E-100",))
    gcp.add_user("twin1@example.com", external_ids=("E-200",))
    gcp.add_user("twin2@example.com", external_ids=("e-200",))
    gcp.add_user("odd@example.com", external_ids=("it's me",))
    driver = make_driver(userLookupStrategy="externalId")
    found = await driver.lookup_users(["e-100", "E-200", "it's me", "E-999"])
    assert found["e-100"] == (PlatformUser("carol@example.com", "E-100"),)
    assert [u.id for u in found["E-200"]] == ["twin1@example.com", "twin2@example.com"]  # ambiguous
    assert [u.id for u in found["it's me"]] == ["odd@example.com"]
    assert found["E-999"] == ()
    assert dict(driver.api_calls) == {"users.list": 4}


async def test_throttled_lookup_is_retryable_and_pauses_the_budget(gcp: GcpServer, driver: GcpDriver) -> None:
    budget = RecordingBudget()
    driver.budget = budget
    gcp.fail_next(r"/users/", 429, "RESOURCE_EXHAUSTED", retry_after="7")
    with pytest.raises(RetryableError) as info:
        await driver.lookup_users(["a@example.com"])
    assert info.value.retry_after == 7.0
    assert budget.pauses == [7.0]
    gcp.fail_next(r"/users/", 503, "UNAVAILABLE")
    with pytest.raises(RetryableError):
        await driver.lookup_users(["a@example.com"])
    # The Admin SDK's other way of saying "slow down": 403 with a rate-limit reason.
    gcp.fail_next(r"/users/", 403, "PERMISSION_DENIED", reason="userRateLimitExceeded")
    with pytest.raises(RetryableError):
        await driver.lookup_users(["a@example.com"])
    # A missing permission: the Admin SDK refuses the search within the customer too.
    gcp.fail_next(r"/users/", 403, "", reason="forbidden")
    gcp.fail_next(r"/users$", 403, "", reason="forbidden")
    with pytest.raises(PermanentError) as denied:
        await driver.lookup_users(["a@example.com"])
    assert not isinstance(denied.value, RetryableError)
    gcp.add_user("a@example.com")
    assert (await driver.lookup_users(["a@example.com"]))["a@example.com"][0].id == "a@example.com"
    assert gcp.calls("GET", r"/users/") == 5, "googleapiclient itself must not retry"
    assert budget.pauses == [7.0]


# --- groups and members ---------------------------------------------------------------------------


async def test_create_group_is_a_marked_discussion_group_and_idempotent(
    gcp: GcpServer, driver: GcpDriver, tenant: TenantRef
) -> None:
    gid = await create(driver, tenant)
    assert await create(driver, tenant) == gid
    groups = gcp.groups()
    assert list(groups) == [ADMIN_EMAIL]
    g = groups[ADMIN_EMAIL]
    assert g["name"] == gid
    assert g["parent"] == f"customers/{gcp.world.customer}"
    assert g["description"] == marker(tenant)
    assert g["displayName"] == ADMIN
    assert g["labels"] == {"cloudidentity.googleapis.com/groups.discussion_forum": ""}
    assert driver.api_calls["groups.create"] == 1
    assert gcp.members(ADMIN_EMAIL) == [], "EMPTY: no initial owner (the caller) in the group"


async def test_create_group_asks_for_an_empty_group_which_only_an_admin_may(
    gcp: GcpServer, driver: GcpDriver, tenant: TenantRef
) -> None:
    """initialGroupConfig=EMPTY "can only be used by admins of the domain": refused otherwise,
    permanently (the identity lacks the Groups Admin role), and nothing is created."""
    gcp.world.caller_is_groups_admin = False
    with pytest.raises(PermanentError, match="permission to create group") as info:
        await create(driver, tenant)
    assert not isinstance(info.value, RetryableError)
    assert gcp.groups() == {}


def test_the_server_refuses_what_groups_create_refuses(gcp: GcpServer) -> None:
    body = {
        "groupKey": {"id": ADMIN_EMAIL},
        "parent": f"customers/{gcp.world.customer}",
        "labels": {"cloudidentity.googleapis.com/groups.discussion_forum": ""},
    }

    def create(config: str | None) -> tuple[int, dict[str, Any]]:
        query = f"?initialGroupConfig={config}" if config else ""
        request = urllib.request.Request(
            f"{gcp.url}v1/groups{query}", json.dumps(body).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(request) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert create(None)[0] == 400
    assert create("INITIAL_GROUP_CONFIG_UNSPECIFIED")[0] == 400
    code, op = create("WITH_INITIAL_OWNER")
    assert (code, op["done"]) == (200, True)
    assert gcp.members(ADMIN_EMAIL) == [gcp.world.caller], "the caller is the initial owner"
    assert create("EMPTY")[0] == 409


async def test_a_create_still_running_is_pending_and_never_sent_twice(
    gcp: GcpServer, driver: GcpDriver, tenant: TenantRef
) -> None:
    """groups.create may answer an Operation with done:false (v1 has no operations.get): the group
    is "being created", the change is pending, and it is not created a second time."""
    gcp.world.slow_creates, gcp.world.create_delay = 1, 3600.0
    for _ in range(2):
        with pytest.raises(PendingError, match="still being created"):
            await create(driver, tenant)
    assert driver.api_calls["groups.create"] == 1
    assert gcp.being_created() == [ADMIN_EMAIL]
    gcp.catch_up()  # the create has finished
    gid = await create(driver, tenant)
    assert gcp.groups()[ADMIN_EMAIL]["name"] == gid
    assert driver.api_calls["groups.create"] == 1, "found by lookup, not created again"


async def test_create_group_refuses_foreign_groups(
    gcp: GcpServer, driver: GcpDriver, tenant: TenantRef
) -> None:
    gcp.add_user("erin@example.com")
    foreign = gcp.add_group(ADMIN_EMAIL, description="made by hand", members=("erin@example.com",))
    with pytest.raises(ForeignObjectError, match="not ours"):
        await create(driver, tenant)
    other = TenantRef(f"acme/api/{PLATFORM}", PLATFORM, "acme-api-1")
    await create(driver, other, READER, "reader")
    with pytest.raises(ForeignObjectError):
        await create(driver, tenant, READER, "reader")
    groups = gcp.groups()
    assert groups[ADMIN_EMAIL]["name"] == foreign
    assert groups[ADMIN_EMAIL]["description"] == "made by hand"
    assert gcp.members(ADMIN_EMAIL) == ["erin@example.com"]
    assert groups[READER_EMAIL]["description"] == marker(other)


async def test_add_and_remove_member_twice(gcp: GcpServer, driver: GcpDriver, tenant: TenantRef) -> None:
    gcp.add_user("carol@example.com")
    (carol,) = (await driver.lookup_users(["carol@example.com"]))["carol@example.com"]
    gid = await create(driver, tenant)
    add = Change(Action.ADD_MEMBER, ADMIN, "admin", user=carol)
    await driver.apply(tenant, add, gid)
    await driver.apply(tenant, add, gid)  # 409 ALREADY_EXISTS: success
    assert gcp.members(ADMIN_EMAIL) == ["carol@example.com"]
    remove = Change(Action.REMOVE_MEMBER, ADMIN, "admin", user=carol)
    await driver.apply(tenant, remove, gid)
    await driver.apply(tenant, remove, gid)  # lookup 404: already gone
    assert gcp.members(ADMIN_EMAIL) == []
    assert driver.api_calls["groups.memberships.create"] == 2
    assert driver.api_calls["groups.memberships.delete"] == 1


async def test_adding_an_unknown_user_is_permanent(
    gcp: GcpServer, driver: GcpDriver, tenant: TenantRef
) -> None:
    gid = await create(driver, tenant)
    ghost = PlatformUser("ghost@example.com", "ghost@example.com")
    with pytest.raises(PermanentError, match=r"ghost@example\.com"):
        await driver.apply(tenant, Change(Action.ADD_MEMBER, ADMIN, "admin", user=ghost), gid)
    assert gcp.members(ADMIN_EMAIL) == []


async def test_observe_pages_members_and_reads_the_policy_once(
    gcp: GcpServer, driver: GcpDriver, tenant: TenantRef
) -> None:
    gcp.world.membership_page_max = 2
    people = [f"p{i}@example.com" for i in range(5)]
    for p in people:
        gcp.add_user(p)
    admin = await create(driver, tenant)
    reader = await create(driver, tenant, READER, "reader")
    for p in people:
        gcp.add_member(ADMIN_EMAIL, p)
    gcp.add_member(READER_EMAIL, people[0])
    gcp.add_user("bob@example.com")
    gcp.set_policy(
        PROJECT,
        [
            {"role": "roles/editor", "members": [f"group:{ADMIN_EMAIL}", "user:bob@example.com"]},
            {"role": "roles/viewer", "members": [f"group:{READER_EMAIL}", f"group:{ADMIN_EMAIL}"]},
            {
                "role": "roles/owner",
                "members": [f"group:{ADMIN_EMAIL}"],
                "condition": {
                    "title": "until 2030",
                    "expression": "request.time < timestamp('2030-01-01T00:00:00Z')",
                },
            },
        ],
    )
    driver.api_calls.clear()
    owned = [OwnedGroup("admin", ADMIN, admin), OwnedGroup("reader", READER, reader)]
    observed = await driver.observe(tenant, owned, {"admin": ADMIN, "reader": READER})
    by_alias = {g.alias: g for g in observed.groups}
    assert sorted(u.id for u in by_alias["admin"].members) == people
    assert [u.id for u in by_alias["reader"].members] == [people[0]]
    assert by_alias["admin"].roles == {"roles/editor", "roles/viewer"}, "conditional bindings are not ours"
    assert by_alias["reader"].roles == {"roles/viewer"}
    assert by_alias["admin"].name == ADMIN
    assert dict(driver.api_calls) == {
        "groups.get": 2,
        "groups.memberships.list": 3 + 1,  # 5 members at 2 a page, then 1
        "projects.getIamPolicy": 1,
    }


async def test_observe_ownership_vanished_pending_and_foreign(
    gcp: GcpServer, driver: GcpDriver, tenant: TenantRef
) -> None:
    admin = await create(driver, tenant)
    gone = await create(driver, tenant, "acme.web-old", "old")
    await driver.apply(tenant, Change(Action.DELETE_GROUP, "acme.web-old", "old"), gone)
    other = TenantRef(f"acme/api/{PLATFORM}", PLATFORM, "acme-api-1")
    await create(driver, other, "acme.web-user", "user")  # another tenant's marker on our name
    gcp.add_group(READER_EMAIL, description="by hand")
    owned = [
        OwnedGroup("admin", ADMIN, None),  # a create never confirmed: found by name, marker names us
        OwnedGroup("old", "acme.web-old", gone),
    ]
    observed = await driver.observe(
        tenant, owned, {"admin": ADMIN, "reader": READER, "user": "acme.web-user"}
    )
    assert [(g.alias, g.id) for g in observed.groups] == [("admin", admin)]
    assert observed.vanished == ("acme.web-old",)
    assert set(observed.foreign) == {READER, "acme.web-user"}


async def test_delete_group_twice_and_never_a_foreign_one(
    gcp: GcpServer, driver: GcpDriver, tenant: TenantRef
) -> None:
    gid = await create(driver, tenant)
    await driver.apply(tenant, Change(Action.DELETE_GROUP, ADMIN, "admin"), gid)
    await driver.apply(tenant, Change(Action.DELETE_GROUP, ADMIN, "admin"), gid)
    assert gcp.groups() == {}
    foreign = gcp.add_group(READER_EMAIL, description="by hand")
    with pytest.raises(ForeignObjectError):
        await driver.apply(tenant, Change(Action.DELETE_GROUP, READER, "reader"), foreign)
    with pytest.raises(ForeignObjectError):
        await driver.apply(tenant, Change(Action.DELETE_GROUP, READER, "reader"), None)
    assert list(gcp.groups()) == [READER_EMAIL]


# --- the group scan (prepare) ---------------------------------------------------------------------


def drop_marker(gcp: GcpServer, email: str) -> None:
    """Someone edits a group's description by hand (the server state, not through the driver)."""
    with gcp.world.lock:
        gid = gcp.group_id(email)
        gcp.world.groups[gid]["description"] = "taken over by hand"


async def test_a_scanned_observe_of_several_tenants_reads_no_group_one_by_one(
    gcp: GcpServer, driver: GcpDriver, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    """prepare() pages groups.list once; observe then answers from the scan what groups.get and
    groups.lookup answered, tenant by tenant: the same ObservedTenant, G + 1 calls for G groups."""
    gcp.world.group_page_max = 4
    gcp.add_user("alice@example.com")
    alice = PlatformUser("alice@example.com", "alice@example.com")
    api = TenantRef(f"acme/api/{PLATFORM}", PLATFORM, "acme-api-1")
    db = TenantRef(f"acme/db/{PLATFORM}", PLATFORM, "acme-db-1")
    owned: dict[TenantRef, list[OwnedGroup]] = {}
    desired: dict[TenantRef, dict[str, str]] = {}
    for t, prefix in ((api, "acme.api"), (db, "acme.db")):
        gcp.add_project(t.local_id)
        ids = {alias: await create(driver, t, f"{prefix}-{alias}", alias) for alias in ("admin", "reader")}
        await driver.apply(t, Change(Action.ADD_MEMBER, f"{prefix}-admin", "admin", user=alice), ids["admin"])
        await driver.apply(
            t, Change(Action.GRANT, f"{prefix}-reader", "reader", role="roles/viewer"), ids["reader"]
        )
        owned[t] = [OwnedGroup(a, f"{prefix}-{a}", i) for a, i in ids.items()]
        desired[t] = {a: f"{prefix}-{a}" for a in ids}
    admin = await create(driver, tenant)
    reader = await create(driver, tenant, READER, "reader")
    hand = await create(driver, tenant, "acme.web-hand", "hand")
    drop_marker(gcp, f"acme.web-hand@{DOMAIN}")
    other = await create(driver, api, "acme.web-other", "other")  # another tenant's marker, our name
    ops = gcp.add_group(f"acme.web-ops@{DOMAIN}", description="made by hand")
    gcp.add_group(f"bystander-1@{DOMAIN}")
    gcp.add_group(f"bystander-2@{DOMAIN}")
    await driver.apply(tenant, Change(Action.ADD_MEMBER, ADMIN, "admin", user=alice), admin)
    await driver.apply(tenant, Change(Action.GRANT, ADMIN, "admin", role="roles/editor"), admin)
    owned[tenant] = [
        OwnedGroup("admin", ADMIN, admin),
        OwnedGroup("hand", "acme.web-hand", hand),  # recorded, marker removed by hand: foreign
        OwnedGroup("reader", READER, None),  # pending: found by name, our marker: adopted
    ]
    desired[tenant] = {
        "admin": ADMIN,
        "reader": READER,
        "ops": "acme.web-ops",
        "other": "acme.web-other",
        "free": "acme.web-free",
    }
    assert len(gcp.groups()) == 11  # 3 pages of 4
    names = sum(len({r.name for r in owned[t]} | set(desired[t].values())) for t in owned)
    assert names == 10

    plain = make_driver()
    expected = {t: await plain.observe(t, owned[t], desired[t]) for t in owned}
    web = expected[tenant]
    assert [(g.alias, g.id) for g in web.groups] == [("admin", admin), ("reader", reader)]
    assert web.groups[0].members == {alice}
    assert web.groups[0].roles == {"roles/editor"}
    assert web.vanished == ()
    assert dict(web.foreign) == {"acme.web-hand": hand, "acme.web-ops": ops, "acme.web-other": other}
    assert [len(expected[t].groups) for t in (api, db)] == [2, 2]
    assert dict(plain.api_calls) == {
        "groups.get": 2 + 2 + 5,  # api, db; web: admin, hand, reader, ops, other
        "groups.lookup": 4,  # reader, ops, other, free
        "groups.memberships.list": 6,
        "projects.getIamPolicy": 3,
    }

    scanned = make_driver(groupScanThreshold=5)
    await scanned.prepare(names)
    assert dict(scanned.api_calls) == {"groups.list": 3}
    assert gcp.calls("GET", r"^/v1/groups$") == 3
    for t in (api, db, tenant):
        scanned.api_calls.clear()
        assert await scanned.observe(t, owned[t], desired[t]) == expected[t]
        if t != tenant:  # a no-op observe of G groups: G + 1 calls
            assert dict(scanned.api_calls) == {"groups.memberships.list": 2, "projects.getIamPolicy": 1}
    assert dict(scanned.api_calls) == {"groups.memberships.list": 2, "projects.getIamPolicy": 1}

    # the scan gave the email: a grant needs no groups.get
    scanned.api_calls.clear()
    await scanned.apply(
        db, Change(Action.GRANT, "acme.db-admin", "admin", role="roles/editor"), owned[db][0].platform_id
    )
    assert dict(scanned.api_calls) == {"projects.getIamPolicy": 1, "projects.setIamPolicy": 1}
    assert gcp.roles_of("acme-db-1", f"group:acme.db-admin@{DOMAIN}") == ["roles/editor"]


async def test_groups_deleted_before_or_after_the_scan_are_vanished_or_free(
    gcp: GcpServer, driver: GcpDriver, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    admin = await create(driver, tenant)
    reader = await create(driver, tenant, READER, "reader")
    old = await create(driver, tenant, "acme.web-old", "old")
    left = await create(driver, tenant, "acme.web-left", "left")  # a leftover: ours, no record
    await driver.apply(tenant, Change(Action.DELETE_GROUP, "acme.web-old", "old"), old)  # before the scan

    scanned = make_driver(groupScanThreshold=1)
    await scanned.prepare(4)
    assert dict(scanned.api_calls) == {"groups.list": 1}
    # between prepare and observe: someone deletes two groups the scan has
    await driver.apply(tenant, Change(Action.DELETE_GROUP, READER, "reader"), reader)
    await driver.apply(tenant, Change(Action.DELETE_GROUP, "acme.web-left", "left"), left)
    scanned.api_calls.clear()
    owned = [
        OwnedGroup("admin", ADMIN, admin),
        OwnedGroup("old", "acme.web-old", old),
        OwnedGroup("reader", READER, reader),
    ]
    desired = {"admin": ADMIN, "reader": READER, "left": "acme.web-left"}
    observed = await scanned.observe(tenant, owned, desired)
    assert [(g.alias, g.id) for g in observed.groups] == [("admin", admin)]
    assert observed.vanished == ("acme.web-old", READER)
    assert dict(observed.foreign) == {}
    assert dict(scanned.api_calls) == {
        "groups.get": 2,  # old (not in the scan), reader (in the scan, gone since)
        "groups.memberships.list": 3,  # admin; reader and left answer 404: deleted since the scan
        "projects.getIamPolicy": 1,
    }
    assert await make_driver().observe(tenant, owned, desired) == observed
    # forgotten for the rest of the run
    scanned.api_calls.clear()
    assert await scanned.observe(tenant, owned, desired) == observed
    assert dict(scanned.api_calls) == {
        "groups.get": 2,
        "groups.memberships.list": 1,
        "projects.getIamPolicy": 1,
    }


async def test_a_group_made_after_the_scan_under_our_name_is_never_taken_over(
    gcp: GcpServer, driver: GcpDriver, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    admin = await create(driver, tenant)
    scanned = make_driver(groupScanThreshold=1)
    await scanned.prepare(2)
    assert dict(scanned.api_calls) == {"groups.list": 1}
    gcp.add_user("erin@example.com")
    foreign = gcp.add_group(READER_EMAIL, description="made by hand", members=("erin@example.com",))
    scanned.api_calls.clear()
    observed = await scanned.observe(
        tenant, [OwnedGroup("admin", ADMIN, admin)], {"admin": ADMIN, "reader": READER}
    )
    assert [g.id for g in observed.groups] == [admin]
    assert dict(observed.foreign) == {}, "not in the scan: the name looks free to observe"
    assert "groups.lookup" not in scanned.api_calls
    scanned.api_calls.clear()
    with pytest.raises(ForeignObjectError, match="not ours"):
        await scanned.apply(tenant, Change(Action.CREATE_GROUP, READER, "reader"), None)
    assert dict(scanned.api_calls) == {"groups.lookup": 1, "groups.get": 1}
    group = gcp.groups()[READER_EMAIL]
    assert (group["name"], group["description"]) == (foreign, "made by hand")
    assert gcp.members(READER_EMAIL) == ["erin@example.com"]
    assert gcp.calls("POST", r"^/v1/groups$") == 1  # only the admin group, before the scan


async def among_bystanders(gcp: GcpServer, driver: GcpDriver, tenant: TenantRef, others: int) -> str:
    """Our admin group (its id), then ``others`` groups of someone else; a groups page holds 2."""
    admin = await create(driver, tenant)
    for i in range(others):
        gcp.add_group(f"bystander-{i}@{DOMAIN}")
    gcp.world.group_page_max = 2
    return admin


async def test_the_scan_is_skipped_abandoned_or_reset_when_it_would_not_pay(
    gcp: GcpServer, driver: GcpDriver, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    admin = await among_bystanders(gcp, driver, tenant, 4)  # 5 groups: 3 pages
    owned = [OwnedGroup("admin", ADMIN, admin)]

    default = make_driver()  # threshold 20
    await default.prepare(19)
    never = make_driver(groupScanThreshold=0)
    await never.prepare(10_000)
    assert default.api_calls.total() == never.api_calls.total() == 0
    await never.observe(tenant, owned, {"admin": ADMIN})
    assert never.api_calls["groups.get"] == 1

    abandoned = make_driver(groupScanThreshold=1)
    await abandoned.prepare(5)  # 5 // 2 = 2 pages at most
    assert dict(abandoned.api_calls) == {"groups.list": 2}
    abandoned.api_calls.clear()
    observed = await abandoned.observe(tenant, owned, {"admin": ADMIN})
    assert [g.id for g in observed.groups] == [admin]
    assert abandoned.api_calls["groups.get"] == 1, "an abandoned scan falls back to reads per group"

    scanned = make_driver(groupScanThreshold=1)
    await scanned.prepare(6)  # 3 pages allowed: the whole scan
    assert dict(scanned.api_calls) == {"groups.list": 3}
    scanned.api_calls.clear()
    await scanned.observe(tenant, owned, {"admin": ADMIN})
    assert "groups.get" not in scanned.api_calls
    scanned.api_calls.clear()
    await scanned.prepare(0)  # every run starts without the last one's scan
    assert scanned.api_calls.total() == 0
    await scanned.observe(tenant, owned, {"admin": ADMIN})
    assert scanned.api_calls["groups.get"] == 1


async def test_a_failed_scan_leaves_no_scan(
    gcp: GcpServer, driver: GcpDriver, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    admin = await among_bystanders(gcp, driver, tenant, 3)
    pages = 0

    def fail_the_second_page(method: str, path: str) -> None:
        nonlocal pages
        if method == "GET" and path == "/v1/groups":
            pages += 1
            if pages == 2:
                gcp.world.faults.append(Fault(r"^/v1/groups$", 503, "UNAVAILABLE"))

    gcp.watch(fail_the_second_page)
    scanned = make_driver(groupScanThreshold=1)
    with pytest.raises(RetryableError, match=r"groups\.list"):
        await scanned.prepare(10)
    assert dict(scanned.api_calls) == {"groups.list": 2}
    scanned.api_calls.clear()
    observed = await scanned.observe(tenant, [OwnedGroup("admin", ADMIN, admin)], {"admin": ADMIN})
    assert [g.id for g in observed.groups] == [admin]
    assert scanned.api_calls["groups.get"] == 1


async def test_the_scan_asks_for_the_most_a_full_page_may_hold(
    gcp: GcpServer, driver: GcpDriver, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    """view=FULL (the description is the marker) pages hold at most 500 groups; 501 groups are
    exactly two pages, and the server refuses a larger pageSize as Google does."""
    admin = await create(driver, tenant)
    for i in range(500):
        gcp.add_group(f"bystander-{i}@{DOMAIN}")
    scanned = make_driver(groupScanThreshold=1)
    await scanned.prepare(4)  # two pages at most
    assert dict(scanned.api_calls) == {"groups.list": 2}
    scanned.api_calls.clear()
    observed = await scanned.observe(tenant, [OwnedGroup("admin", ADMIN, admin)], {"admin": ADMIN})
    assert [g.id for g in observed.groups] == [admin]
    assert "groups.get" not in scanned.api_calls


def list_groups(gcp: GcpServer, **query: str) -> tuple[int, dict[str, Any]]:
    url = f"{gcp.url}v1/groups?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_server_lists_groups_as_documented(gcp: GcpServer) -> None:
    for i in range(60):
        gcp.add_group(f"g{i}@{DOMAIN}", description=f"d{i}")
    parent = f"customers/{gcp.world.customer}"
    code, page = list_groups(gcp, parent=parent, view="FULL")
    assert code == 200
    assert len(page["groups"]) == 50, "FULL defaults to 50 a page"
    assert page["groups"][0]["description"] == "d0"
    code, rest = list_groups(gcp, parent=parent, view="FULL", pageToken=page["nextPageToken"])
    assert (code, len(rest["groups"]), "nextPageToken" in rest) == (200, 10, False)
    code, basic = list_groups(gcp, parent=parent, pageSize="1000")
    assert code == 200
    assert len(basic["groups"]) == 60
    assert set(basic["groups"][0]) == {"name", "groupKey", "parent", "displayName", "labels"}
    for view, size in (("FULL", "501"), ("BASIC", "1001")):
        code, err = list_groups(gcp, parent=parent, view=view, pageSize=size)
        assert (code, err["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert list_groups(gcp, parent=parent, view="FULL", pageSize="500")[0] == 200
    assert list_groups(gcp, view="FULL")[0] == 400
    assert list_groups(gcp, parent="customers/C0other")[0] == 403


# --- IAM policy -----------------------------------------------------------------------------------


async def test_grant_and_revoke_touch_only_our_member(
    gcp: GcpServer, driver: GcpDriver, tenant: TenantRef
) -> None:
    gcp.add_user("bob@example.com")
    gcp.add_custom_role(f"projects/{PROJECT}/roles/deployer")
    other = gcp.add_group(f"ops@{DOMAIN}", description="someone else's")
    assert other
    conditional = {
        "role": "roles/editor",
        "members": [f"group:{ADMIN_EMAIL}"],
        "condition": {"title": "t", "expression": "request.time < timestamp('2030-01-01T00:00:00Z')"},
    }
    gid = await create(driver, tenant)
    gcp.set_policy(
        PROJECT,
        [{"role": "roles/viewer", "members": ["user:bob@example.com", f"group:ops@{DOMAIN}"]}, conditional],
    )
    roles = ["roles/viewer", "roles/editor", f"projects/{PROJECT}/roles/deployer"]
    for role in roles * 2:
        await driver.apply(tenant, Change(Action.GRANT, ADMIN, "admin", role=role), gid)
    policy = gcp.policy(PROJECT)
    assert policy["version"] == 3
    assert policy["bindings"][0] == {
        "role": "roles/viewer",
        "members": ["user:bob@example.com", f"group:ops@{DOMAIN}", f"group:{ADMIN_EMAIL}"],
    }
    assert policy["bindings"][1] == conditional
    assert gcp.roles_of(PROJECT, f"group:{ADMIN_EMAIL}") == sorted(roles)
    assert driver.api_calls["projects.setIamPolicy"] == 3, "an existing binding is not written again"

    for role in roles * 2:
        await driver.apply(tenant, Change(Action.REVOKE, ADMIN, "admin", role=role), gid)
    assert gcp.policy(PROJECT)["bindings"] == [
        {"role": "roles/viewer", "members": ["user:bob@example.com", f"group:ops@{DOMAIN}"]},
        conditional,
    ], "bindings emptied by us are gone; others' members and conditional bindings stay"
    assert driver.api_calls["projects.setIamPolicy"] == 6


async def test_concurrent_policy_edit_is_reread_and_survives(
    gcp: GcpServer, driver: GcpDriver, tenant: TenantRef
) -> None:
    gcp.add_user("bob@example.com")
    gid = await create(driver, tenant)

    def someone_else(policy: dict[str, Any]) -> None:
        policy["bindings"].append({"role": "roles/browser", "members": ["user:bob@example.com"]})

    gcp.interfere(PROJECT, someone_else)
    await driver.apply(tenant, Change(Action.GRANT, ADMIN, "admin", role="roles/editor"), gid)
    assert gcp.policy(PROJECT)["bindings"] == [
        {"role": "roles/browser", "members": ["user:bob@example.com"]},
        {"role": "roles/editor", "members": [f"group:{ADMIN_EMAIL}"]},
    ]
    assert driver.api_calls["projects.getIamPolicy"] == 2
    assert driver.api_calls["projects.setIamPolicy"] == 2
    assert gcp.calls("POST", r":setIamPolicy$") == 2


async def test_a_policy_that_keeps_changing_gives_up_retryably(
    gcp: GcpServer, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    driver = make_driver(policyAttempts=3)
    gid = await create(driver, tenant)
    edits = 0

    def someone_else(policy: dict[str, Any]) -> None:  # before each of the three sets
        nonlocal edits
        edits += 1
        policy.setdefault("auditConfigs", []).append({"service": f"s{edits}"})
        if edits < 3:
            gcp.interfere(PROJECT, someone_else)

    gcp.interfere(PROJECT, someone_else)
    with pytest.raises(RetryableError, match="3 attempts"):
        await driver.apply(tenant, Change(Action.GRANT, ADMIN, "admin", role="roles/editor"), gid)
    assert gcp.roles_of(PROJECT, f"group:{ADMIN_EMAIL}") == []
    assert driver.api_calls["projects.setIamPolicy"] == 3


async def test_a_new_group_unknown_to_iam_is_pending_then_granted(
    gcp: GcpServer, make_driver: MakeDriver, tenant: TenantRef
) -> None:
    """setIamPolicy answers 400 "Group <email> does not exist." for a group Cloud Identity has just
    created: pending (retried, then requeued), never a permanent failure; granted once IAM knows it."""
    gcp.world.iam_lag = 3600.0  # longer than anything the test waits
    driver = make_driver(pendingRetryAfter=5)
    gid = await create(driver, tenant)
    grant = Change(Action.GRANT, ADMIN, "admin", role="roles/editor")
    with pytest.raises(PendingError, match="IAM does not know the group yet") as info:
        await driver.apply(tenant, grant, gid)
    assert info.value.retry_after == 5
    assert gcp.roles_of(PROJECT, f"group:{ADMIN_EMAIL}") == []
    # A later run (a new driver: nothing remembered) tells the lag from a missing group the same way.
    again = make_driver()
    with pytest.raises(PendingError):
        await again.apply(tenant, grant, gid)
    assert again.api_calls["groups.get"] == 2  # the email, then the check after the refusal
    gcp.catch_up()
    await again.apply(tenant, grant, gid)
    assert gcp.roles_of(PROJECT, f"group:{ADMIN_EMAIL}") == ["roles/editor"]


async def test_a_new_group_is_granted_within_the_retries_when_the_lag_is_short(
    gcp: GcpServer, driver: GcpDriver, tenant: TenantRef
) -> None:
    gcp.world.iam_lag = 0.3
    gid = await create(driver, tenant)
    grant = Change(Action.GRANT, ADMIN, "admin", role="roles/editor")
    deadline = time.monotonic() + 30
    while True:  # what the engine does with a PendingError within the run
        try:
            await driver.apply(tenant, grant, gid)
            break
        except PendingError:
            assert time.monotonic() < deadline, "the lag never ended"
            await asyncio.sleep(0.1)
    assert gcp.roles_of(PROJECT, f"group:{ADMIN_EMAIL}") == ["roles/editor"]


async def test_a_group_that_really_does_not_exist_stays_a_permanent_refusal(
    gcp: GcpServer, driver: GcpDriver, tenant: TenantRef
) -> None:
    """The same 400 for a group Cloud Identity does not have (deleted behind our back) is permanent,
    not pending: it would be requeued forever."""
    gcp.world.iam_lag = 3600.0
    gid = await create(driver, tenant)
    with gcp.world.lock:  # someone deletes it by hand; the driver still holds its email and id
        del gcp.world.groups[gid]
    with pytest.raises(PermanentError, match="does not exist") as info:
        await driver.apply(tenant, Change(Action.GRANT, ADMIN, "admin", role="roles/editor"), gid)
    assert not isinstance(info.value, RetryableError)


async def test_an_unknown_role_fails_permanently_naming_it(
    gcp: GcpServer, driver: GcpDriver, tenant: TenantRef
) -> None:
    gid = await create(driver, tenant)
    with pytest.raises(PermanentError, match=r"roles/no\.such") as info:
        await driver.apply(tenant, Change(Action.GRANT, ADMIN, "admin", role="roles/no.such"), gid)
    assert not isinstance(info.value, RetryableError)
    assert gcp.policy(PROJECT)["bindings"] == []


async def test_unknown_project_is_permanent(gcp: GcpServer, driver: GcpDriver) -> None:
    gid = await create(driver, TenantRef(f"acme/web/{PLATFORM}", PLATFORM, PROJECT))
    nowhere = TenantRef(f"acme/none/{PLATFORM}", PLATFORM, "no-such-project")
    with pytest.raises(PermanentError, match="PERMISSION_DENIED"):
        await driver.observe(nowhere, [OwnedGroup("admin", ADMIN, gid)], {"admin": ADMIN})


def test_policy_with_is_pure_and_keeps_everything_else() -> None:
    policy = {
        "version": 1,
        "etag": "e1",
        "auditConfigs": [{"service": "allServices"}],
        "bindings": [{"role": "roles/viewer", "members": ["Group:A@example.com"]}],
    }
    assert policy_with(policy, "roles/viewer", "a@example.com", True) is None  # case-insensitive
    removed = policy_with(policy, "roles/viewer", "a@example.com", False)
    assert removed == {
        "version": 1,
        "etag": "e1",
        "auditConfigs": [{"service": "allServices"}],
        "bindings": [],
    }
    assert policy["bindings"] == [{"role": "roles/viewer", "members": ["Group:A@example.com"]}], (
        "input unchanged"
    )
