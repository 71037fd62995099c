"""AwsDriver against a real moto server over HTTP.

Every result is read back from moto with plain boto3 (the MotoAws helpers), never through the
driver. moto is more lenient than AWS (it stores a duplicate membership or account assignment
twice), so the tests assert exact counts: passing must not depend on that leniency.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import traceback
import urllib.parse
from collections.abc import AsyncIterator, Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from platforms.aws import AwsDriver, AwsOptions
from platforms.aws.errors import translate
from platforms.contract import (
    Action,
    Change,
    ForeignObjectError,
    ObservedGroup,
    OwnedGroup,
    PermanentError,
    PlatformConfigError,
    PlatformUser,
    RetryableError,
    TenantRef,
)
from platforms.kit import OWNER_MARKER
from tests.integration.conftest import RecordingBudget, assert_import_loads_no_sdk, closing_drivers
from tests.support.faults import FaultProxy
from tests.support.local_server import LocalHttpServer, free_port
from tests.support.moto_aws import MotoAws

pytestmark = pytest.mark.integration

ACCOUNT = "111111111111"
OTHER_ACCOUNT = "222222222222"
TENANT = TenantRef(key="acme/web/aws.eu-central-1", platform="aws.eu-central-1", local_id=ACCOUNT)
OTHER_TENANT = TenantRef(key="acme/api/aws.eu-central-1", platform="aws.eu-central-1", local_id=OTHER_ACCOUNT)
MARKER = f"{OWNER_MARKER} tenant={TENANT.key}"
ADMIN = "mst-acme.web-admin"
READER = "mst-acme.web-reader"

MakeDriver = Callable[..., AwsDriver]


@pytest.fixture
async def make_driver(moto: MotoAws) -> AsyncIterator[MakeDriver]:
    def build(**overrides: Any) -> AwsDriver:
        options = moto.driver_options(maxAttempts=1, pollInterval=0.01, pollTimeout=5.0)
        options.update(overrides)
        return AwsDriver("aws.eu-central-1", options)

    async with closing_drivers(build) as make:
        yield make


def create(group: str = ADMIN, alias: str = "admin") -> Change:
    return Change(Action.CREATE_GROUP, group=group, alias=alias)


def member(action: Action, user: PlatformUser, group: str = ADMIN) -> Change:
    return Change(action, group=group, alias="admin", user=user, euid=user.name)


def role(action: Action, arn: str, group: str = ADMIN) -> Change:
    return Change(action, group=group, alias="admin", role=arn)


def calls(driver: AwsDriver) -> dict[str, int]:
    return {op: n for op, n in driver.api_calls.items() if n}


# --- options, capabilities, import ----------------------------------------------------------------


def test_import_does_not_load_boto3() -> None:
    assert_import_loads_no_sdk("platforms.aws, platforms.registry", "aws", ("boto3", "botocore"))


def test_options_camel_case_and_strict() -> None:
    options = AwsOptions.model_validate(
        {
            "region": "eu-central-1",
            "identityStoreId": "d-1",
            "instanceArn": "arn:i",
            "endpointUrl": "http://x",
        }
    )
    assert (options.identity_store_id, options.endpoint_url, options.max_attempts) == ("d-1", "http://x", 3)
    assert (options.poll_interval, options.poll_timeout, options.assume_role_arn) == (1.0, 120.0, None)
    schema = AwsOptions.model_json_schema(by_alias=True)
    assert "identityStoreId" in schema["properties"]
    assert all(prop.get("description") for prop in schema["properties"].values())
    with pytest.raises(PlatformConfigError):
        AwsDriver("aws.x", {"region": "r", "identityStoreId": "d", "instanceArn": "a", "secretKey": "s"})
    with pytest.raises(PlatformConfigError):
        AwsDriver("aws.x", {"region": "r", "identityStoreId": "d"})
    assert AwsDriver("aws.x", options).options is options


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("mst-acme.web-admin", True),
        ("mst-Grüße 管理 ✓ (\u03b1)\u00a0x\u3000y", True),
        ("a\tb\nc\rd", True),
        ("", False),
        ("a\x00b", False),
        ("a\x7fb", False),
        ("zero\u200bwidth", False),
        ("priv\ue000ate", False),
        ("x" * 1024, True),
        ("x" * 1025, False),
    ],
)
def test_group_name_capabilities(name: str, ok: bool) -> None:
    caps = AwsDriver.capabilities
    assert (caps.check_group_name(name) is None) is ok
    assert (caps.external_grants_default, caps.lookup_attribute, caps.group_name_prefix) == (
        "keep",
        "userName",
        "mst-",
    )


# --- lookup ---------------------------------------------------------------------------------------


async def test_lookup_exact_case_insensitive_missing_and_scanned_once(
    moto: MotoAws, driver: AwsDriver
) -> None:
    alice = moto.create_user("alice")
    jdoe = moto.create_user("JDoe", "John Doe")
    moto.create_user("bob")

    found = await driver.lookup_users(["alice", "jdoe", "ghost"])
    assert found == {
        "alice": (PlatformUser(alice, "alice"),),
        "jdoe": (PlatformUser(jdoe, "JDoe"),),
        "ghost": (),
    }
    again = await driver.lookup_users(["JDOE", "Alice"])
    assert again == {"JDOE": (PlatformUser(jdoe, "JDoe"),), "Alice": (PlatformUser(alice, "alice"),)}
    assert calls(driver) == {"list_users": 1}


async def test_lookup_pages_through_the_store_and_concurrent_lookups_share_one_scan(
    moto: MotoAws, driver: AwsDriver
) -> None:
    ids = {f"user{i:03d}": moto.create_user(f"user{i:03d}") for i in range(105)}

    first, second = await asyncio.gather(driver.lookup_users(["USER000"]), driver.lookup_users(["user104"]))
    assert first == {"USER000": (PlatformUser(ids["user000"], "user000"),)}
    assert second == {"user104": (PlatformUser(ids["user104"], "user104"),)}
    assert calls(driver) == {"list_users": 2}  # 105 users: two pages of at most 100, scanned once


# --- create_group ---------------------------------------------------------------------------------


async def test_create_group_with_marker_and_again_same_id(moto: MotoAws, driver: AwsDriver) -> None:
    group_id = await driver.apply(TENANT, create(), None)
    assert group_id is not None
    assert moto.groups() == {ADMIN: group_id}
    assert moto.group_descriptions() == {ADMIN: MARKER}
    assert calls(driver) == {"get_group_id": 1, "create_group": 1}

    assert await driver.apply(TENANT, create(), None) == group_id
    assert moto.group_count(ADMIN) == 1
    assert moto.groups() == {ADMIN: group_id}


async def test_create_group_refuses_a_foreign_group(moto: MotoAws, driver: AwsDriver) -> None:
    foreign = moto.create_group(ADMIN, "made by hand")
    other = moto.create_group(READER, f"{OWNER_MARKER} tenant={OTHER_TENANT.key}")

    with pytest.raises(ForeignObjectError, match="create_group"):
        await driver.apply(TENANT, create(), None)
    with pytest.raises(ForeignObjectError):  # ours, but for another tenant
        await driver.apply(TENANT, create(READER, "reader"), None)
    assert moto.groups() == {ADMIN: foreign, READER: other}
    assert moto.group_descriptions() == {
        ADMIN: "made by hand",
        READER: f"{OWNER_MARKER} tenant={OTHER_TENANT.key}",
    }
    assert driver.api_calls["create_group"] == 0


# --- memberships ----------------------------------------------------------------------------------


async def test_add_member_twice_is_one_membership_and_remove_twice(moto: MotoAws, driver: AwsDriver) -> None:
    user = PlatformUser(moto.create_user("alice"), "alice")
    group_id = await driver.apply(TENANT, create(), None)
    assert group_id is not None

    assert await driver.apply(TENANT, member(Action.ADD_MEMBER, user), group_id) is None
    driver.api_calls.clear()
    await driver.apply(TENANT, member(Action.ADD_MEMBER, user), group_id)
    assert moto.members(group_id) == [user.id]  # moto would have stored a second one
    assert calls(driver) == {"get_group_membership_id": 1}

    await driver.apply(TENANT, member(Action.REMOVE_MEMBER, user), group_id)
    assert moto.members(group_id) == []
    await driver.apply(TENANT, member(Action.REMOVE_MEMBER, user), group_id)
    assert moto.members(group_id) == []


# --- grants ---------------------------------------------------------------------------------------


async def test_grant_twice_is_one_assignment_and_revoke_twice(moto: MotoAws, driver: AwsDriver) -> None:
    admin = moto.create_permission_set("admin")
    group_id = await driver.apply(TENANT, create(), None)
    assert group_id is not None
    bystander = moto.create_group("someone-else")
    moto.assign(ACCOUNT, admin, bystander)

    await driver.apply(TENANT, role(Action.GRANT, admin), group_id)
    await driver.apply(TENANT, role(Action.GRANT, admin), group_id)
    assert sorted(moto.assignments(ACCOUNT, admin)) == sorted([("GROUP", group_id), ("GROUP", bystander)])
    assert moto.assignments(OTHER_ACCOUNT, admin) == []

    await driver.apply(TENANT, role(Action.REVOKE, admin), group_id)
    assert moto.assignments(ACCOUNT, admin) == [("GROUP", bystander)]
    driver.api_calls.clear()
    await driver.apply(TENANT, role(Action.REVOKE, admin), group_id)
    assert moto.assignments(ACCOUNT, admin) == [("GROUP", bystander)]
    assert calls(driver) == {"list_account_assignments": 1}


async def test_grant_polls_an_assignment_that_is_in_progress(
    moto: MotoAws, driver: AwsDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto answers SUCCEEDED at once; pretend AWS said IN_PROGRESS and see the driver poll moto."""
    admin = moto.create_permission_set("admin")
    group_id = await driver.apply(TENANT, create(), None)
    assert group_id is not None
    real = driver._call_sync

    def in_progress(
        service: str, operation: str, params: dict[str, Any], retried: list[int]
    ) -> dict[str, Any]:
        response = real(service, operation, params, retried)
        for key in ("AccountAssignmentCreationStatus", "AccountAssignmentDeletionStatus"):
            if operation.endswith("_account_assignment") and key in response:
                response[key]["Status"] = "IN_PROGRESS"
        return response

    monkeypatch.setattr(driver, "_call_sync", in_progress)
    await driver.apply(TENANT, role(Action.GRANT, admin), group_id)
    assert driver.api_calls["describe_account_assignment_creation_status"] == 1
    assert moto.assignments(ACCOUNT, admin) == [("GROUP", group_id)]
    await driver.apply(TENANT, role(Action.REVOKE, admin), group_id)
    assert driver.api_calls["describe_account_assignment_deletion_status"] == 1
    assert moto.assignments(ACCOUNT, admin) == []


@pytest.mark.parametrize(
    ("status", "error", "text"),
    [
        ("FAILED", PermanentError, "permission set is not provisioned"),
        ("IN_PROGRESS", RetryableError, "still"),
    ],
)
async def test_grant_failed_or_never_done(
    moto: MotoAws,
    make_driver: MakeDriver,
    monkeypatch: pytest.MonkeyPatch,
    status: str,
    error: type[Exception],
    text: str,
) -> None:
    driver = make_driver(pollTimeout=0.05)
    admin = moto.create_permission_set("admin")
    group_id = await driver.apply(TENANT, create(), None)
    assert group_id is not None
    real = driver._call_sync

    def stuck(service: str, operation: str, params: dict[str, Any], retried: list[int]) -> dict[str, Any]:
        response = real(service, operation, params, retried)
        for key in ("AccountAssignmentCreationStatus",):
            if key in response:
                response[key]["Status"] = "IN_PROGRESS" if operation.startswith("create") else status
                response[key]["FailureReason"] = "permission set is not provisioned"
        return response

    monkeypatch.setattr(driver, "_call_sync", stuck)
    with pytest.raises(error, match=text):
        await driver.apply(TENANT, role(Action.GRANT, admin), group_id)


async def test_requests_botocore_repeated_are_paid_from_the_budget(
    moto: MotoAws, make_driver: MakeDriver
) -> None:
    """botocore's standard mode repeats throttled requests by itself, outside ``async with budget``;
    each repeat is paid afterwards, so the budget sees every request the platform saw."""
    for i in range(3):
        moto.create_group(f"g{i}")
    with FaultProxy(moto.url, rate=0.4, seed=5, faults={"429": 1}, retry_after=(0,)) as proxy:
        driver = make_driver(endpointUrl=proxy.url, maxAttempts=10)
        budget = RecordingBudget()
        driver.budget = budget
        for _ in range(2):
            await driver.prepare(0)
            assert await driver.observe(TENANT, [], {"admin": "g0", "user": "g1"}) is not None
        assert proxy.injected > 0, "no 429 was injected: the test proves nothing"
        assert budget.entered == len(proxy.log), (budget.entered, proxy.log)
        assert driver.api_calls.total() < len(proxy.log), "botocore repeated requests"


# --- observe --------------------------------------------------------------------------------------


async def test_observe_reads_members_and_every_role_on_the_account(moto: MotoAws, driver: AwsDriver) -> None:
    alice = PlatformUser(moto.create_user("alice"), "alice")
    bob = PlatformUser(moto.create_user("Bob"), "Bob")
    admin_ps, read_ps, audit_ps = (moto.create_permission_set(n) for n in ("admin", "read", "audit"))
    admin = await driver.apply(TENANT, create(), None)
    reader = await driver.apply(TENANT, create(READER, "reader"), None)
    assert admin is not None
    assert reader is not None
    for user in (alice, bob):
        await driver.apply(TENANT, member(Action.ADD_MEMBER, user), admin)
    await driver.apply(TENANT, role(Action.GRANT, admin_ps), admin)
    await driver.apply(TENANT, role(Action.GRANT, read_ps, READER), reader)
    moto.assign(ACCOUNT, audit_ps, admin)  # granted by hand: an external grant, still reported
    moto.assign(OTHER_ACCOUNT, read_ps, admin)  # another account: not this tenant's
    bystander = moto.create_group("someone-else")
    moto.assign(ACCOUNT, read_ps, bystander)  # same account, another group: not reported
    moto.add_member(bystander, alice.id)

    owned = [
        OwnedGroup("admin", ADMIN, admin, frozenset({admin_ps})),
        OwnedGroup("reader", READER, reader, frozenset({read_ps})),
    ]
    desired = {"admin": ADMIN, "reader": READER}
    fresh = make_observer(moto)
    observed = await fresh.observe(TENANT, owned, desired)

    assert observed.groups == (
        ObservedGroup(admin, ADMIN, "admin", frozenset({alice, bob}), frozenset({admin_ps, audit_ps})),
        ObservedGroup(reader, READER, "reader", frozenset(), frozenset({read_ps})),
    )
    assert observed.vanished == ()
    assert dict(observed.foreign) == {}
    # without a user scan, each member is described once, then remembered
    assert calls(fresh) == {
        "describe_group": 2,
        "list_group_memberships": 2,
        "list_account_assignments_for_principal": 2,
        "describe_user": 2,
    }
    fresh.api_calls.clear()
    assert await fresh.observe(TENANT, owned, desired) == observed
    assert calls(fresh) == {
        "describe_group": 2,
        "list_group_memberships": 2,
        "list_account_assignments_for_principal": 2,
    }

    # after a lookup the scan resolves members: a no-op observe is 3 calls per owned group
    scanned = make_observer(moto)
    await scanned.lookup_users(["alice", "bob"])
    scanned.api_calls.clear()
    assert await scanned.observe(TENANT, owned, desired) == observed
    assert sum(scanned.api_calls.values()) == 3 * len(owned)


def make_observer(moto: MotoAws) -> AwsDriver:
    return AwsDriver("aws.eu-central-1", moto.driver_options(maxAttempts=1, pollInterval=0.01))


async def test_observe_vanished_foreign_and_not_ours(moto: MotoAws, driver: AwsDriver) -> None:
    gone = await driver.apply(TENANT, create(), None)
    assert gone is not None
    moto.client("identitystore").delete_group(IdentityStoreId=moto.identity_store_id, GroupId=gone)
    taken = moto.create_group(READER, "made by hand")
    hijacked = moto.create_group("mst-acme.web-user", "not ours")

    observed = await driver.observe(
        TENANT,
        [
            OwnedGroup("admin", ADMIN, gone),
            OwnedGroup("user", "mst-acme.web-user", hijacked),
            OwnedGroup("ops", "mst-acme.web-ops", None),  # pending, never created
        ],
        {
            "admin": ADMIN,
            "reader": READER,
            "user": "mst-acme.web-user",
            "ops": "mst-acme.web-ops",
            "x": "mst-free",
        },
    )
    assert observed.groups == ()
    assert observed.vanished == (ADMIN, "mst-acme.web-ops")
    assert dict(observed.foreign) == {READER: taken, "mst-acme.web-user": hijacked}
    assert moto.groups() == {READER: taken, "mst-acme.web-user": hijacked}  # nothing changed


async def test_a_scanned_run_observes_the_same_with_fewer_calls(
    moto: MotoAws, driver: AwsDriver, make_driver: MakeDriver
) -> None:
    """prepare() reads the identity store's groups once (ListGroups); observe then answers from
    the scan what DescribeGroup/GetGroupId answered: a group deleted by hand is vanished, a recorded
    id without our marker is foreign, a free name is free, a foreign group with our name is foreign,
    our leftover found by name is adopted."""
    alice = PlatformUser(moto.create_user("alice"), "alice")
    admin = await driver.apply(TENANT, create(), None)
    gone = await driver.apply(TENANT, create("mst-acme.web-gone", "gone"), None)
    leftover = await driver.apply(TENANT, create(READER, "reader"), None)
    assert admin is not None
    assert gone is not None
    assert leftover is not None
    await driver.apply(TENANT, member(Action.ADD_MEMBER, alice), admin)
    moto.client("identitystore").delete_group(IdentityStoreId=moto.identity_store_id, GroupId=gone)
    hijacked = moto.create_group("mst-acme.web-user", "not ours")
    taken = moto.create_group("mst-acme.web-ops", "made by hand")
    owned = [
        OwnedGroup("admin", ADMIN, admin),
        OwnedGroup("gone", "mst-acme.web-gone", gone),
        OwnedGroup("user", "mst-acme.web-user", hijacked),
        OwnedGroup("reader", READER, None),  # pending: found by name, ours
    ]
    desired = {"admin": ADMIN, "reader": READER, "ops": "mst-acme.web-ops", "x": "mst-free"}

    plain = make_driver()
    expected = await plain.observe(TENANT, owned, desired)
    assert expected.vanished == ("mst-acme.web-gone",)
    assert dict(expected.foreign) == {"mst-acme.web-user": hijacked, "mst-acme.web-ops": taken}
    assert [g.id for g in expected.groups] == [admin, leftover]

    scanned = make_driver(groupScanThreshold=5)
    await scanned.prepare(6)
    assert dict(scanned.api_calls) == {"list_groups": 1}
    scanned.api_calls.clear()
    assert await scanned.observe(TENANT, owned, desired) == expected
    # only the id the scan lacks is described, to tell "deleted" from "created after the scan"
    assert scanned.api_calls["describe_group"] == 1
    assert "get_group_id" not in scanned.api_calls
    assert plain.api_calls["describe_group"] + plain.api_calls["get_group_id"] == 8

    # a group created after the scan is not in it: described, not taken for vanished
    later = await driver.apply(TENANT, create("mst-acme.web-later", "later"), None)
    assert later is not None
    scanned.api_calls.clear()
    observed = await scanned.observe(TENANT, [OwnedGroup("later", "mst-acme.web-later", later)], {})
    assert [g.id for g in observed.groups] == [later]
    assert scanned.api_calls["describe_group"] == 1


async def test_the_scan_is_skipped_or_abandoned_when_it_would_not_pay(
    moto: MotoAws, driver: AwsDriver, make_driver: MakeDriver
) -> None:
    admin = await driver.apply(TENANT, create(), None)
    assert admin is not None
    small = make_driver()  # default threshold 20
    await small.prepare(3)
    assert small.api_calls.total() == 0
    never = make_driver(groupScanThreshold=0)
    await never.prepare(10_000)
    assert never.api_calls.total() == 0

    client = moto.client("identitystore")
    for i in range(101):  # two pages of groups, but the run names only 2: one page is the limit
        client.create_group(IdentityStoreId=moto.identity_store_id, DisplayName=f"bystander-{i}")
    abandoned = make_driver(groupScanThreshold=1)
    await abandoned.prepare(2)
    assert dict(abandoned.api_calls) == {"list_groups": 1}
    abandoned.api_calls.clear()
    observed = await abandoned.observe(TENANT, [OwnedGroup("admin", ADMIN, admin)], {"admin": ADMIN})
    assert [g.id for g in observed.groups] == [admin]
    assert abandoned.api_calls["describe_group"] == 1, "an abandoned scan falls back to reads per group"


class AwsLikeGroups(LocalHttpServer):
    """An HTTP proxy in front of moto (real sockets on 127.0.0.1) that answers like AWS where moto
    does not: ``ListGroupMemberships`` of a group the identity store no longer has is refused with
    ResourceNotFoundException, the answer ``DescribeGroup`` gives for it (moto 5.2 keeps a deleted
    group's memberships and lists them). Every other request is forwarded untouched.
    ``delete_after_describe``: group ids deleted in moto as soon as a ``DescribeGroup`` of them is
    answered (someone deletes the group between the driver's two reads)."""

    thread_name = "aws-like-groups"
    join_timeout = 10.0
    address_outlives_server = True

    def __init__(self, moto: MotoAws) -> None:
        self.moto = moto
        self.delete_after_describe: set[str] = set()
        self.refused: list[str] = []
        """Group ids whose ListGroupMemberships was refused, in order."""
        self.errors: list[str] = []
        upstream = urllib.parse.urlsplit(moto.url)
        host, port = str(upstream.hostname), upstream.port
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def do_POST(self) -> None:
                try:
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    target = self.headers.get("X-Amz-Target") or ""
                    identity_store = target.startswith("AWSIdentityStore.")
                    group_id = str(json.loads(body or b"{}").get("GroupId", "")) if identity_store else ""
                    if target == "AWSIdentityStore.ListGroupMemberships" and not proxy._exists(group_id):
                        proxy.refused.append(group_id)
                        error = {"__type": "ResourceNotFoundException", "Message": "GROUP not found."}
                        self._answer(400, [("x-amzn-ErrorType", "ResourceNotFoundException")], error)
                        return
                    conn = http.client.HTTPConnection(host, port, timeout=30)
                    try:
                        skip = {"host", "content-length", "connection", "transfer-encoding"}
                        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                        conn.request("POST", self.path, body, headers)
                        response = conn.getresponse()
                        status, out_headers, out = response.status, response.getheaders(), response.read()
                    finally:
                        conn.close()
                    if target == "AWSIdentityStore.DescribeGroup" and group_id in proxy.delete_after_describe:
                        proxy.delete_after_describe.discard(group_id)
                        proxy.moto.client("identitystore").delete_group(
                            IdentityStoreId=proxy.moto.identity_store_id, GroupId=group_id
                        )
                    kept = [(k, v) for k, v in out_headers if k.lower() not in skip]
                    self._send(status, kept, out)
                except Exception:
                    proxy.errors.append(traceback.format_exc())
                    raise

            def _answer(self, status: int, headers: list[tuple[str, str]], payload: Any) -> None:
                headers = [("Content-Type", "application/x-amz-json-1.1"), *headers]
                self._send(status, headers, json.dumps(payload).encode())

            def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response_only(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._handler_class = Handler
        self._bind()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return self._handler_class

    def _exists(self, group_id: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.moto.client("identitystore").describe_group(
                IdentityStoreId=self.moto.identity_store_id, GroupId=group_id
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return False
            raise
        return True


def delete_group(moto: MotoAws, group_id: str) -> None:
    moto.client("identitystore").delete_group(IdentityStoreId=moto.identity_store_id, GroupId=group_id)


async def test_a_group_deleted_after_the_scan_is_vanished_and_the_tenant_observed(
    moto: MotoAws, driver: AwsDriver, make_driver: MakeDriver
) -> None:
    """A group of the scan deleted before observe reads its members: the member read answers
    ResourceNotFoundException, the group is dropped from the scan and the tenant observed again,
    where the group is described (vanished). The other groups are observed as without a scan."""
    alice = PlatformUser(moto.create_user("alice"), "alice")
    bob = PlatformUser(moto.create_user("bob"), "bob")
    admin_ps = moto.create_permission_set("admin")
    gone_name = "mst-acme.web-gone"
    admin = await driver.apply(TENANT, create(), None)
    gone = await driver.apply(TENANT, create(gone_name, "gone"), None)
    reader = await driver.apply(TENANT, create(READER, "reader"), None)
    assert admin is not None
    assert gone is not None
    assert reader is not None
    await driver.apply(TENANT, member(Action.ADD_MEMBER, alice), admin)
    await driver.apply(TENANT, member(Action.ADD_MEMBER, bob, gone_name), gone)
    await driver.apply(TENANT, role(Action.GRANT, admin_ps), admin)
    await driver.apply(TENANT, role(Action.GRANT, admin_ps, gone_name), gone)
    owned = [
        OwnedGroup("admin", ADMIN, admin),
        OwnedGroup("gone", gone_name, gone),
        OwnedGroup("reader", READER, reader),
    ]
    desired = {"admin": ADMIN, "gone": gone_name, "reader": READER, "x": "mst-free"}

    with AwsLikeGroups(moto) as aws:
        scanned = make_driver(groupScanThreshold=5, endpointUrl=aws.url)
        await scanned.lookup_users(["alice", "bob"])
        await scanned.prepare(6)
        assert calls(scanned) == {"list_users": 1, "list_groups": 1}
        scanned.api_calls.clear()
        delete_group(moto, gone)  # by hand, after the scan

        observed = await scanned.observe(TENANT, owned, desired)

        assert aws.refused == [gone]
        assert aws.errors == []
        # first pass: admin read, gone's member read refused; second pass: admin again, gone
        # described (not found: vanished), reader read
        assert calls(scanned) == {
            "list_group_memberships": 4,
            "list_account_assignments_for_principal": 3,
            "describe_group": 1,
        }
        scanned.api_calls.clear()
        assert await scanned.observe(TENANT, owned, desired) == observed
        assert calls(scanned) == {
            "list_group_memberships": 2,
            "list_account_assignments_for_principal": 2,
            "describe_group": 1,
        }, "the group left the scan: no second refusal"

    assert observed.groups == (
        ObservedGroup(admin, ADMIN, "admin", frozenset({alice}), frozenset({admin_ps})),
        ObservedGroup(reader, READER, "reader", frozenset(), frozenset()),
    )
    assert observed.vanished == (gone_name,)
    assert dict(observed.foreign) == {}
    plain = make_driver()
    assert await plain.observe(TENANT, owned, desired) == observed
    assert moto.groups() == {ADMIN: admin, READER: reader}  # nothing was changed


async def test_only_a_group_taken_from_the_scan_is_observed_again(
    moto: MotoAws, driver: AwsDriver, make_driver: MakeDriver
) -> None:
    """Our leftover found by name in the scan and deleted before observe: its name is free
    (vanished, as without a scan). A group this observe described itself and that is deleted
    before its member read fails the observation, scan or not: nothing is reported as gone."""
    leftover = await driver.apply(TENANT, create(), None)
    assert leftover is not None
    pending = [OwnedGroup("admin", ADMIN, None)]
    with AwsLikeGroups(moto) as aws:
        scanned = make_driver(groupScanThreshold=1, endpointUrl=aws.url)
        await scanned.prepare(2)
        scanned.api_calls.clear()
        delete_group(moto, leftover)
        observed = await scanned.observe(TENANT, pending, {"admin": ADMIN})
        assert (observed.groups, observed.vanished, dict(observed.foreign)) == ((), (ADMIN,), {})
        assert calls(scanned) == {"list_group_memberships": 1}  # the refused read; then the name is free
        assert await make_driver().observe(TENANT, pending, {"admin": ADMIN}) == observed

        # created after the scan (or no scan): described, then deleted before its member read
        described: list[str] = []
        for observer in (scanned, make_driver(endpointUrl=aws.url)):
            later = await driver.apply(TENANT, create(READER, "reader"), None)
            assert later is not None
            described.append(later)
            aws.delete_after_describe.add(later)
            observer.api_calls.clear()
            with pytest.raises(PermanentError, match="list_group_memberships: ResourceNotFoundException"):
                await observer.observe(TENANT, [OwnedGroup("reader", READER, later)], {"reader": READER})
            assert calls(observer) == {"describe_group": 1, "list_group_memberships": 1}
        assert aws.refused == [leftover, *described]
        assert aws.errors == []


async def test_observe_adopts_our_pending_and_leftover_groups(moto: MotoAws, driver: AwsDriver) -> None:
    alice = PlatformUser(moto.create_user("alice"), "alice")
    pending = await driver.apply(TENANT, create(), None)
    leftover = await driver.apply(TENANT, create(READER, "reader"), None)
    assert pending is not None
    assert leftover is not None
    await driver.apply(TENANT, member(Action.ADD_MEMBER, alice), pending)
    others = moto.create_group("mst-acme.web-user", f"{OWNER_MARKER} tenant={OTHER_TENANT.key}")
    stranger = moto.create_group("mst-acme.web-ops", "made by hand")

    observed = await driver.observe(
        TENANT,
        [OwnedGroup("admin", ADMIN, None), OwnedGroup("ops", "mst-acme.web-ops", None)],
        {"admin": ADMIN, "reader": READER, "user": "mst-acme.web-user", "ops": "mst-acme.web-ops"},
    )
    assert observed.groups == (
        ObservedGroup(pending, ADMIN, "admin", frozenset({alice}), frozenset()),
        ObservedGroup(leftover, READER, "reader", frozenset(), frozenset()),
    )
    assert observed.vanished == ()
    assert dict(observed.foreign) == {"mst-acme.web-user": others, "mst-acme.web-ops": stranger}


async def test_observe_raises_instead_of_a_partial_observation(moto: MotoAws, driver: AwsDriver) -> None:
    group_id = await driver.apply(TENANT, create(), None)
    assert group_id is not None
    owned = [OwnedGroup("admin", ADMIN, group_id), OwnedGroup("user", "mst-acme.web-user", "")]
    # botocore refuses the empty GroupId before sending it: the whole observation fails
    with pytest.raises(PermanentError, match="describe_group"):
        await driver.observe(TENANT, owned, {"admin": ADMIN})


# --- delete_group ---------------------------------------------------------------------------------


async def test_delete_group_owned_and_foreign(moto: MotoAws, driver: AwsDriver) -> None:
    ours = await driver.apply(TENANT, create(), None)
    leftover = await driver.apply(TENANT, create("mst-acme.web-old", "old"), None)
    foreign = moto.create_group(READER, "made by hand")

    delete = Change(Action.DELETE_GROUP, group=ADMIN, alias="admin")
    assert await driver.apply(TENANT, delete, ours) is None
    assert await driver.apply(TENANT, delete, ours) is None  # already gone: success
    assert ADMIN not in moto.groups()

    with pytest.raises(ForeignObjectError):
        await driver.apply(TENANT, Change(Action.DELETE_GROUP, group=READER, alias="reader"), foreign)
    with pytest.raises(ForeignObjectError):  # no id: found by name, still not ours
        await driver.apply(TENANT, Change(Action.DELETE_GROUP, group=READER, alias="reader"), None)
    await driver.apply(TENANT, Change(Action.DELETE_GROUP, group="mst-acme.web-old", alias="old"), None)
    assert moto.groups() == {READER: foreign}
    assert leftover not in moto.groups().values()


# --- errors ---------------------------------------------------------------------------------------


async def test_unreachable_endpoint_is_retryable_and_names_the_operation(
    make_driver: MakeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "Sup3rS3cretValue")
    driver = make_driver(endpointUrl=f"http://127.0.0.1:{free_port()}", maxAttempts=1)
    with pytest.raises(RetryableError, match="list_users") as caught:
        await driver.lookup_users(["alice"])
    assert "Sup3rS3cretValue" not in str(caught.value)
    with pytest.raises(RetryableError, match="describe_group"):
        await driver.observe(TENANT, [OwnedGroup("admin", ADMIN, "1234")], {})


async def test_a_4xx_from_moto_is_permanent(moto: MotoAws, driver: AwsDriver) -> None:
    group_id = await driver.apply(TENANT, create(), None)
    ghost = PlatformUser("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "ghost")
    with pytest.raises(PermanentError, match="create_group_membership: ResourceNotFoundException") as caught:
        await driver.apply(TENANT, member(Action.ADD_MEMBER, ghost), group_id)
    assert not isinstance(caught.value, RetryableError)
    assert moto.members(group_id or "") == []


async def test_unsupported_or_incomplete_changes_are_permanent(driver: AwsDriver) -> None:
    user = PlatformUser("u", "alice")
    with pytest.raises(PermanentError, match="ensure_user"):
        await driver.apply(TENANT, Change(Action.ENSURE_USER, group=ADMIN, alias="admin", user=user), None)
    with pytest.raises(PermanentError, match="no platform id"):
        await driver.apply(TENANT, member(Action.ADD_MEMBER, user), None)
    with pytest.raises(PermanentError, match="no permission set"):
        await driver.apply(TENANT, Change(Action.GRANT, group=ADMIN, alias="admin"), "g")
    assert calls(driver) == {}


@pytest.mark.parametrize(
    ("code", "status", "message", "expected"),
    [
        ("ThrottlingException", 400, "Rate exceeded", RetryableError),
        ("ServiceQuotaExceededException", 402, "Too many concurrent requests, throttled", RetryableError),
        ("ServiceQuotaExceededException", 402, "The number of groups exceeds the limit", PermanentError),
        ("InternalServerException", 500, "oops", RetryableError),
        ("SomethingNew", 503, "", RetryableError),
        ("AccessDeniedException", 403, "not authorized", PermanentError),
        ("ValidationException", 400, "bad id", PermanentError),
        ("UnrecognizedClientException", 400, "bad token", PlatformConfigError),
        ("ConflictException", 409, "write not propagated", RetryableError),
    ],
)
def test_client_error_mapping(code: str, status: int, message: str, expected: type[Exception]) -> None:
    from botocore.exceptions import ClientError

    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    exc = ClientError(response, "DescribeGroup")
    mapped = translate("describe_group", exc)
    assert isinstance(mapped, expected)
    assert mapped.retryable is issubclass(expected, RetryableError)
    assert str(mapped).startswith(f"aws describe_group: {code}")


def test_transport_error_mapping() -> None:
    from botocore.exceptions import (
        ConnectionClosedError,
        EndpointConnectionError,
        NoCredentialsError,
        ParamValidationError,
        ReadTimeoutError,
    )

    assert isinstance(translate("op", EndpointConnectionError(endpoint_url="http://x")), RetryableError)
    assert isinstance(translate("op", ConnectionClosedError(endpoint_url="http://x")), RetryableError)
    assert isinstance(translate("op", ReadTimeoutError(endpoint_url="http://x")), RetryableError)
    assert isinstance(translate("op", NoCredentialsError()), PlatformConfigError)
    assert isinstance(translate("op", ParamValidationError(report="bad")), PermanentError)
    assert translate("op", ValueError("not botocore")) is None


# --- credentials ----------------------------------------------------------------------------------


async def test_assume_role(moto: MotoAws, make_driver: MakeDriver) -> None:
    alice = moto.create_user("alice")
    driver = make_driver(assumeRoleArn="arn:aws:iam::123456789012:role/replicator")
    assert await driver.lookup_users(["alice"]) == {"alice": (PlatformUser(alice, "alice"),)}
    group_id = await driver.apply(TENANT, create(), None)
    assert moto.groups() == {ADMIN: group_id}
    assert driver.api_calls["assume_role"] == 1
