"""The LDAP connector against a real OpenLDAP server (slapd, tests/support/slapd.py): mapping,
membership, paging past the server's size limit, deprovisioning, and the safety rules (a failed or
partial read changes nothing)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from replicator.cli import main
from replicator.core.compile import compile_tenant
from replicator.core.config import LdapConnector
from replicator.inputs.loader import load
from replicator.inputs.validate import validate
from replicator.sources import ldap
from state import Store
from tests.support.memory_driver import MemoryDriver, Platform
from tests.support.slapd import (
    GROUPS,
    OUTSIDE,
    PEOPLE,
    READER_DN,
    READER_PASSWORD,
    SIZE_LIMIT,
    Slapd,
    group,
    person,
    slapd_binary,
)

PLATFORM = "aws.eu-central-1"
TENANT = f"finance/ledger/{PLATFORM}"
ARN = "arn:aws:sso:::permissionSet/ssoins-1/ps-"

ORG = f"""\
apiVersion: v1
kind: meshUser
metadata: {{name: filey}}
spec: {{euid: taken@example.org}}
---
apiVersion: v1
kind: meshWorkspace
metadata: {{name: finance}}
---
apiVersion: v1
kind: meshProject
metadata: {{name: ledger, ownedByWorkspace: finance}}
---
apiVersion: v1
kind: meshTenant
metadata: {{ownedByWorkspace: finance, ownedByProject: ledger, platformIdentifier: {PLATFORM}}}
spec: {{localId: "111111111111", landingZoneIdentifier: lz}}
---
apiVersion: v1
kind: meshProjectBinding
metadata: {{ownedByWorkspace: finance, ownedByProject: ledger, name: devs-admin}}
spec: {{role: admin, subjects: [{{group: devs}}]}}
"""

NO_TENANT = ORG.split("---\napiVersion: v1\nkind: meshTenant")[0]
"""The files without the tenant and the binding that names the ldap group devs."""

pytestmark = pytest.mark.skipif(
    slapd_binary() is None and os.environ.get("CI") != "true",
    reason="slapd is not installed (make ldap-backend installs it)",
)


def uid_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Slapd]:
    if slapd_binary() is None:
        pytest.fail("slapd is not installed and CI=true: run make ldap-backend")
    entries = [
        person("alice", employeeNumber="E-1001"),
        person("bob", employeeNumber="E-1002"),
        person("carol", employeeNumber="E-1003"),
        (f"uid=dave,{OUTSIDE}", person("dave", employeeNumber="E-2001")[1]),
        group("devs", [uid_dn("alice"), uid_dn("bob"), f"uid=dave,{OUTSIDE}"]),
        group("ops", [uid_dn("carol")], unique=True),
    ]
    with Slapd(tmp_path / "slapd", entries) as server:
        yield server


def write_config(root: Path, server: Slapd, *, org: str = ORG, **connector: Any) -> Path:
    (root / "org.yaml").write_text(org)
    (root / "reader.secret").write_text(READER_PASSWORD + "\n")
    ldap_block: dict[str, Any] = {
        "name": "corp",
        "url": server.url,
        "bindDn": READER_DN,
        "bindPassword": {"file": str(root / "reader.secret")},
        "userBase": PEOPLE,
        "groupBase": GROUPS,
        "attributes": {"id": "uid", "euid": "employeeNumber"},
        "pageSize": 4,
        "timeout": "5s",
    }
    ldap_block.update(connector)
    config = {
        "state": "sqlite:///state.db",
        "inventory": ["org.yaml"],
        "storedObjects": True,
        "identity": {"ldap": [ldap_block]},
        "platforms": [
            {
                "identifier": PLATFORM,
                "type": "aws",
                "aws": {
                    "region": "eu-central-1",
                    "identityStoreId": "d-1234567890",
                    "instanceArn": "arn:aws:sso:::instance/ssoins-1",
                },
            }
        ],
        "landingZones": [
            {
                "identifier": "lz",
                "platform": PLATFORM,
                "roleMappings": {"admin": {"platformGroupAlias": "admin", "platformRoles": [ARN + "admin"]}},
            }
        ],
    }
    path = root / "replicator.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def setup(
    tmp_path: Path, server: Slapd, *, org: str = ORG, **connector: Any
) -> tuple[Path, Store, LdapConnector]:
    path = write_config(tmp_path, server, org=org, **connector)
    config = load(path).config
    return path, Store(f"sqlite:///{tmp_path / 'state.db'}"), config.identity.ldap[0]


def stored_docs(store: Store, kind: str, **kw: Any) -> dict[str, Any]:
    return {o.key: o for o in store.list_objects(kind, **kw)}


def desired_members(path: Path, store: Store) -> dict[str, list[str]]:
    """Group alias -> meshUser names the tenant's groups should have (what a plan converges to)."""
    v = validate(load(path, store))
    tenant = v.inventory.tenants[TENANT]
    desired = compile_tenant(v.config, v.inventory, tenant, v.capabilities[PLATFORM], datetime.now(UTC))
    return {g.alias: sorted(m.user for m in g.members) for g in desired.groups}


def reconcile(path: Path, store: Store, platform: Platform, *, apply: bool) -> list[tuple[str, str]]:
    """Plan (and apply) the tenant against the in-memory platform: (action, platform user name) of
    its member changes."""
    import asyncio

    from replicator.engine.runner import Engine
    from replicator.inputs.validate import Validated

    v = validate(load(path, store))
    v = Validated(v.config, v.inventory, {PLATFORM: MemoryDriver.capabilities})
    engine = Engine(v, store, retry_wait=0.0, make_driver=lambda p: MemoryDriver(p.identifier, platform))
    now = datetime.now(UTC)
    report = asyncio.run(engine.run(engine.select(now), apply=apply, now=now))
    assert report.failed == []
    (result,) = report.results
    assert result.plan is not None
    return [(str(c.action.value), c.user.name) for c in result.plan.changes if c.user is not None]


def test_users_and_groups_synced_with_mapped_attributes(tmp_path: Path, directory: Slapd) -> None:
    path, store, connector = setup(tmp_path, directory)
    result = ldap.sync(connector, path, store)
    assert result.ok, result.error
    users = stored_docs(store, "meshUser")
    assert sorted(users) == ["alice", "bob", "carol"]  # dave is outside the user base
    alice = users["alice"]
    assert alice.source == "ldap:corp"
    assert alice.external_id == uid_dn("alice")
    assert alice.document["spec"] == {
        "username": "alice",
        "email": "alice@example.org",
        "givenName": "Alice",
        "familyName": "Aliceson",
        "euid": "E-1001",
    }
    groups = stored_docs(store, "meshUserGroup")
    # member (devs) and uniqueMember (ops); dave, outside the user base, is ignored.
    assert groups["devs"].document["spec"]["members"] == ["alice", "bob"]
    assert groups["ops"].document["spec"]["members"] == ["carol"]
    assert groups["devs"].external_id == f"cn=devs,{GROUPS}"
    (record,) = store.syncs()
    assert (record.source, record.outcome, record.users, record.groups) == ("ldap:corp", "complete", 3, 2)
    # The inventory now grants the ldap group's members through the file binding.
    assert desired_members(path, store) == {"admin": ["alice", "bob"]}
    # A second sync of an unchanged directory changes nothing.
    again = ldap.sync(connector, path, store)
    assert again.ok
    assert not again.changed
    assert again.revision_after == result.revision_after


def test_membership_from_member_of(tmp_path: Path, directory: Slapd) -> None:
    # The memberof overlay maintains memberOf on entries added while slapd runs.
    directory.add(*group("qa", [uid_dn("carol"), uid_dn("bob")]))
    path, store, connector = setup(tmp_path, directory, membership="memberOf", attributes={"id": "entryUUID"})
    result = ldap.sync(connector, path, store)
    assert result.ok, result.error
    users = stored_docs(store, "meshUser")
    by_uid = {o.document["spec"]["username"]: key for key, o in users.items()}
    assert set(by_uid) == {"alice", "bob", "carol"}
    assert all(len(key) == 36 for key in users)  # entryUUID
    assert users[by_uid["bob"]].document["spec"]["euid"] == "bob"  # default euid attribute: uid
    qa = stored_docs(store, "meshUserGroup")["qa"]
    assert qa.document["spec"]["members"] == sorted([by_uid["carol"], by_uid["bob"]])


def test_paging_past_the_size_limit(tmp_path: Path, directory: Slapd) -> None:
    for i in range(20):
        directory.add(*person(f"user{i:02d}", employeeNumber=f"E-3{i:03d}"))
    path, store, connector = setup(tmp_path, directory, pageSize=4)
    pages: list[tuple[str, int]] = []
    result = ldap.sync(connector, path, store, on_page=lambda what, n: pages.append((what, n)))
    assert result.ok, result.error
    assert result.users_read == 23 > SIZE_LIMIT
    assert len(stored_docs(store, "meshUser")) == 23
    assert [n for what, n in pages if what == "users"] == [1, 2, 3, 4, 5, 6]

    # A page larger than the server allows is refused by the server: the sync fails, nothing changes.
    _, _, too_big = setup(tmp_path, directory, pageSize=SIZE_LIMIT + 5)
    directory.delete(uid_dn("alice"))
    before = store.objects_revision()
    failed = ldap.sync(too_big, path, store)
    assert not failed.ok
    assert "adminLimitExceeded" in (failed.error or "")
    assert store.objects_revision() == before
    assert "alice" in stored_docs(store, "meshUser")


def test_deleted_user_is_deprovisioned_and_loses_access(tmp_path: Path, directory: Slapd) -> None:
    path, store, connector = setup(tmp_path, directory)
    assert ldap.sync(connector, path, store).ok
    assert desired_members(path, store) == {"admin": ["alice", "bob"]}
    platform = Platform()
    for euid in ("E-1001", "E-1002", "E-1003"):
        platform.add_user(euid)
    reconcile(path, store, platform, apply=True)
    assert platform.member_names("mem-finance.ledger-admin") == ["E-1001", "E-1002"]

    directory.delete(uid_dn("bob"))
    result = ldap.sync(connector, path, store)
    assert result.ok, result.error
    assert result.deprovisioned == ["bob"]
    bob = store.get_object("meshUser", "bob")
    assert bob is not None
    assert bob.deprovisioned_at is not None
    assert "bob" not in validate(load(path, store)).inventory.users
    assert desired_members(path, store) == {"admin": ["alice"]}
    # The next plan removes bob's membership; applied, he has lost access.
    assert reconcile(path, store, platform, apply=False) == [("remove_member", "E-1002")]
    reconcile(path, store, platform, apply=True)
    assert platform.member_names("mem-finance.ledger-admin") == ["E-1001"]
    assert stored_docs(store, "meshUserGroup")["devs"].document["spec"]["members"] == ["alice"]
    (record,) = store.syncs()
    assert record.deprovisioned == 1

    # Back in the directory: revived by the next sync.
    directory.add(*person("bob", employeeNumber="E-1002"))
    directory.modify(f"cn=devs,{GROUPS}", {"member": [uid_dn("alice"), uid_dn("bob")]})
    assert ldap.sync(connector, path, store).ok
    revived = store.get_object("meshUser", "bob")
    assert revived is not None
    assert revived.deprovisioned_at is None
    assert desired_members(path, store) == {"admin": ["alice", "bob"]}


def test_outage_between_pages_changes_nothing(tmp_path: Path, directory: Slapd) -> None:
    for i in range(6):
        directory.add(*person(f"user{i:02d}", employeeNumber=f"E-4{i:03d}"))
    path, store, connector = setup(tmp_path, directory, pageSize=2)
    assert ldap.sync(connector, path, store).ok
    before = store.objects_revision()
    directory.delete(uid_dn("alice"))  # would be deprovisioned by a complete read

    def outage(what: str, page: int) -> None:
        if what == "users" and page == 2:
            directory.stop()

    result = ldap.sync(connector, path, store, on_page=outage)
    assert not result.ok
    assert result.error
    assert "user search" in result.error
    assert store.objects_revision() == before
    alice = store.get_object("meshUser", "alice")
    assert alice is not None
    assert alice.deprovisioned_at is None
    (record,) = store.syncs()
    assert (record.outcome, record.error) == ("failed", result.error)
    assert record.last_complete_at is not None  # the earlier complete sync

    # The server comes back: the next complete sync deprovisions alice.
    directory.start()
    after = ldap.sync(connector, path, store)
    assert after.ok, after.error
    assert after.deprovisioned == ["alice"]


def test_server_down_and_bind_failure_change_nothing(
    tmp_path: Path, directory: Slapd, capsys: pytest.CaptureFixture[str]
) -> None:
    path, store, connector = setup(tmp_path, directory)
    assert ldap.sync(connector, path, store).ok
    before = store.objects_revision()

    (tmp_path / "reader.secret").write_text("wrong-password\n")
    failed = ldap.sync(connector, path, store)
    assert not failed.ok
    assert failed.error == f"bind as {READER_DN}: invalid credentials"
    (tmp_path / "reader.secret").write_text(READER_PASSWORD + "\n")

    directory.stop()
    down = ldap.sync(connector, path, store)
    assert not down.ok
    assert f"connecting to {directory.url}" in (down.error or "")
    assert store.objects_revision() == before
    assert sorted(stored_docs(store, "meshUser")) == ["alice", "bob", "carol"]
    out = capsys.readouterr()
    assert READER_PASSWORD not in out.out + out.err
    assert "wrong-password" not in out.out + out.err


def test_empty_complete_read_is_refused_unless_allowed(tmp_path: Path, directory: Slapd) -> None:
    path, store, connector = setup(tmp_path, directory)
    assert ldap.sync(connector, path, store).ok
    before = store.objects_revision()
    _, _, empty = setup(tmp_path, directory, userFilter="(employeeNumber=nobody)")
    refused = ldap.sync(empty, path, store)
    assert not refused.ok
    assert (refused.error or "").startswith("the directory returned no users")
    assert store.objects_revision() == before
    assert len(stored_docs(store, "meshUser")) == 3

    _, _, allowed = setup(tmp_path, directory, userFilter="(employeeNumber=nobody)", allowEmpty=True)
    result = ldap.sync(allowed, path, store)
    assert result.ok, result.error
    assert result.deprovisioned == ["alice", "bob", "carol"]
    assert stored_docs(store, "meshUserGroup")["devs"].document.get("spec", {}).get("members", []) == []
    assert desired_members(path, store) == {"admin": []}

    # Groups gone from the directory: deleted, except devs, which the file binding still names
    # (deleting it would break the inventory): kept without members.
    directory.delete(f"cn=devs,{GROUPS}")
    directory.delete(f"cn=ops,{GROUPS}")
    result = ldap.sync(allowed, path, store)
    assert result.ok, result.error
    assert (result.emptied_groups, result.deleted_groups) == (["devs"], ["ops"])
    assert sorted(stored_docs(store, "meshUserGroup")) == ["devs"]


def test_unwritable_users_are_left_out_and_reported(tmp_path: Path, directory: Slapd) -> None:
    directory.add(*person("erin", employeeNumber="taken@example.org"))  # the file user's euid
    directory.add(*person("frank", employeeNumber="e-1001"))  # alice's, other case
    directory.add(*person("filey", employeeNumber="E-5000"))  # defined in a file
    gina_dn, gina = person("gina", employeeNumber="E-5001")
    directory.add(gina_dn, {**gina, "uid": ["gina", "gina2"]})
    _, bad = person("x", employeeNumber="E-5002")
    directory.add(f"uid=bad name,{PEOPLE}", {**bad, "uid": "bad name"})
    path, store, connector = setup(tmp_path, directory)
    result = ldap.sync(connector, path, store)
    assert result.ok, result.error
    reasons = {s.name: s.reason for s in result.skipped}
    assert reasons == {
        "erin": "euid 'taken@example.org' is also the euid of meshUser filey",
        "frank": f"euid 'e-1001' is also the euid of meshUser alice ({uid_dn('alice')})",
        "filey": "defined in an inventory file",
        "bad name": "uid 'bad name' is not a valid meshUser name (^[A-Za-z0-9][A-Za-z0-9_.@:-]*$)",
    }
    # gina's first uid value is used (multi-valued attribute).
    assert sorted(stored_docs(store, "meshUser")) == ["alice", "bob", "carol", "gina"]
    assert result.users == 4


def test_cli_sync_ldap(tmp_path: Path, directory: Slapd, capsys: pytest.CaptureFixture[str]) -> None:
    path, store, _ = setup(tmp_path, directory)
    code = main(["sync", "ldap", "-c", str(path), "-o", "json", "--log-level", "error"])
    out = capsys.readouterr().out
    assert code == 0, out
    (doc,) = json.loads(out)["results"]
    assert (doc["connector"], doc["outcome"], doc["users"], doc["groups"]) == ("corp", "complete", 3, 2)
    assert sorted(stored_docs(store, "meshUser")) == ["alice", "bob", "carol"]
    assert store.lease_holder("ldap-sync:corp") is None

    assert main(["sync", "ldap", "-c", str(path), "--connector", "nope"]) == 1
    assert "no LDAP connector named 'nope' (configured: corp)" in capsys.readouterr().err

    directory.stop()
    code = main(["sync", "ldap", "-c", str(path), "--connector", "corp", "--log-level", "error"])
    captured = capsys.readouterr()
    assert code == 1
    assert "ldap corp: sync failed, nothing changed: connecting to" in captured.err
    assert "Traceback" not in captured.err


def test_identity_ldap_requires_stored_objects(tmp_path: Path, directory: Slapd) -> None:
    path = write_config(tmp_path, directory)
    doc = yaml.safe_load(path.read_text())
    doc["storedObjects"] = False
    path.write_text(yaml.safe_dump(doc))
    from replicator.inputs.loader import InputError

    with pytest.raises(InputError) as e:
        validate(load(path))
    assert any("storedObjects: true is required by identity.ldap" in str(p) for p in e.value.problems)


def test_binary_values_are_rendered_as_text() -> None:
    guid = bytes.fromhex("6f2b2a3c1d0e4f4a8b9c0d1e2f304152")
    assert ldap.render_value(guid, "objectGUID") == "3c2a2b6f-0e1d-4a4f-8b9c-0d1e2f304152"
    assert ldap.render_value(b"\xff\x00\x01", "someBinaryId") == "ff0001"
    assert ldap.render_value("Zoë".encode(), "cn") == "Zoë"
    sid = bytes([1, 2, 0, 0, 0, 0, 0, 5]) + (32).to_bytes(4, "little") + (544).to_bytes(4, "little")
    assert ldap.render_value(sid, "objectSid") == "S-1-5-32-544"


async def test_daemon_syncs_at_start_under_a_lease(tmp_path: Path, directory: Slapd) -> None:
    import asyncio
    import time
    from datetime import timedelta

    from replicator.service.daemon import Daemon

    # No tenant: the daemon has nothing to reconcile, only the connector to run.
    path = write_config(tmp_path, directory, org=NO_TENANT, interval="1h")
    d = Daemon(config_path=path, listen=None, workers=1, watch_interval=0.1, grace=2)
    await d.start()
    try:
        deadline = time.monotonic() + 20
        while not (d.validated and "alice" in d.validated.inventory.users):
            assert time.monotonic() < deadline, "the startup sync did not reach the inventory"
            await asyncio.sleep(0.05)
        assert d.store is not None
        (record,) = d.store.syncs()
        assert record.outcome == "complete"
        assert d.store.lease_holder("ldap-sync:corp") is None  # released after the sync

        # Another replica holds the lease: this one does not sync.
        directory.delete(uid_dn("bob"))
        other = d.store.acquire_lease("ldap-sync:corp", "other-replica", timedelta(minutes=1))
        assert other is not None
        assert await d.sync_ldap("corp") is None
        assert "bob" in d.validated.inventory.users
        d.store.release_lease("ldap-sync:corp", "other-replica", other)

        result = await d.sync_ldap("corp")
        assert result is not None
        assert result.deprovisioned == ["bob"]
        assert "bob" not in d.validated.inventory.users  # reloaded at once
        (source,) = (await d.status())["sources"]  # what /v1/status shows
        assert (source["source"], source["outcome"], source["deprovisioned"]) == ("ldap:corp", "complete", 1)
    finally:
        await d.stop()


def test_a_referral_fails_the_sync(tmp_path: Path, directory: Slapd) -> None:
    path, store, connector = setup(tmp_path, directory)
    assert ldap.sync(connector, path, store).ok
    before = store.objects_revision()
    directory.delete(uid_dn("carol"))
    remote = "ldap://directory.other.example/ou=people,dc=other,dc=example"
    directory.add(
        f"ou=remote,{PEOPLE}",
        {"objectClass": ["referral", "extensibleObject"], "ou": "remote", "ref": remote},
    )
    result = ldap.sync(connector, path, store)
    assert not result.ok
    assert result.error == (
        f"users search under {PEOPLE}: the server sent a referral ({remote}??sub); referrals are not followed"
    )
    assert store.objects_revision() == before
    carol = store.get_object("meshUser", "carol")
    assert carol is not None
    assert carol.deprovisioned_at is None


def test_a_server_that_does_not_answer_times_out(tmp_path: Path, directory: Slapd) -> None:
    import socket

    path, store, connector = setup(tmp_path, directory)
    assert ldap.sync(connector, path, store).ok
    before = store.objects_revision()
    with socket.socket() as mute:  # accepts connections (the kernel does), never answers
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        _, _, silent = setup(tmp_path, directory, url=f"ldap://127.0.0.1:{mute.getsockname()[1]}", timeout=1)
        result = ldap.sync(silent, path, store)
    assert not result.ok
    assert (result.error or "").startswith(f"bind as {READER_DN}: ")
    assert store.objects_revision() == before
    assert len(stored_docs(store, "meshUser")) == 3


def test_tls_is_verified(tmp_path: Path) -> None:
    if slapd_binary() is None:
        pytest.fail("slapd is not installed and CI=true: run make ldap-backend")
    with Slapd(tmp_path / "slapd", [person("alice", employeeNumber="E-1001")], tls=True) as server:
        assert server.ca_file is not None
        assert server.ldaps_url is not None
        ca = str(server.ca_file)
        path, store, start_tls = setup(tmp_path, server, org=NO_TENANT, startTls=True, caFile=ca)
        result = ldap.sync(start_tls, path, store)
        assert result.ok, result.error
        _, _, ldaps = setup(tmp_path, server, org=NO_TENANT, url=server.ldaps_url, caFile=ca)
        result = ldap.sync(ldaps, path, store)
        assert result.ok, result.error
        assert not result.changed

        # Without the CA the server's certificate is not trusted: failed, nothing changed.
        server.delete(uid_dn("alice"))
        before = store.objects_revision()
        _, _, untrusted = setup(tmp_path, server, org=NO_TENANT, url=server.ldaps_url)
        failed = ldap.sync(untrusted, path, store)
        assert not failed.ok
        assert "CERTIFICATE_VERIFY_FAILED" in (failed.error or ""), failed.error
        _, _, untrusted_start_tls = setup(tmp_path, server, org=NO_TENANT, startTls=True)
        failed = ldap.sync(untrusted_start_tls, path, store)
        assert not failed.ok
        assert (failed.error or "").startswith("StartTLS: "), failed.error
        assert store.objects_revision() == before
        assert sorted(stored_docs(store, "meshUser")) == ["alice"]


def test_a_ca_file_that_cannot_be_read_fails_the_sync(tmp_path: Path, directory: Slapd) -> None:
    """Before, ldap3 refused the missing caFile before the read began: the sync raised instead of
    failing, and its record stayed 'started'."""
    path, store, connector = setup(tmp_path, directory)
    assert ldap.sync(connector, path, store).ok
    before = store.objects_revision()
    _, _, broken = setup(tmp_path, directory, startTls=True, caFile=str(tmp_path / "no-such-ca.pem"))
    result = ldap.sync(broken, path, store)
    assert not result.ok
    assert (result.error or "").startswith("TLS settings (caFile): "), result.error
    assert store.objects_revision() == before
    (record,) = [s for s in store.syncs() if s.source == result.source]
    assert record.outcome == "failed"


def test_a_lease_lost_during_the_read_changes_nothing(tmp_path: Path, directory: Slapd) -> None:
    from datetime import UTC, datetime, timedelta

    path, store, connector = setup(tmp_path, directory, pageSize=2)
    assert ldap.sync_with_lease(connector, path, store, "replica-a") is not None
    before = store.objects_revision()
    directory.delete(uid_dn("alice"))

    def steal(what: str, page: int) -> None:
        # The lease expires under replica-a (a long stall: replica-b asks an hour later) and
        # replica-b takes it.
        later = datetime.now(UTC) + timedelta(hours=1)
        assert store.acquire_lease("ldap-sync:corp", "replica-b", timedelta(minutes=1), now=later) is not None

    result = ldap.sync_with_lease(connector, path, store, "replica-a", on_page=steal)
    assert result is not None
    assert not result.ok
    # bob and carol fit in one page of users: the renewal before the groups finds the lease gone.
    assert result.error == "lost the lease ldap-sync:corp while reading groups (page 1)"
    assert store.objects_revision() == before
    assert store.lease_holder("ldap-sync:corp") == "replica-b"
    assert ldap.sync_with_lease(connector, path, store, "replica-a") is None  # b holds it


def test_connector_names_are_unique(tmp_path: Path, directory: Slapd) -> None:
    from replicator.inputs.loader import InputError

    path = write_config(tmp_path, directory)
    doc = yaml.safe_load(path.read_text())
    doc["identity"]["ldap"].append(dict(doc["identity"]["ldap"][0]))
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError) as e:
        load(path)
    assert any("connector name(s) used more than once: corp" in str(p) for p in e.value.problems)


def test_member_dns_spelled_with_spaces_escapes_or_case_are_the_same_members(
    tmp_path: Path, directory: Slapd
) -> None:
    """Member DNs as people write them (a space after each comma, upper case, a hex escape) name
    the same users as the DNs of the entries. slapd hands DN-syntax values back in its own
    pretty form; whatever it makes of these, they still match the entries' DNs. The spellings a
    directory returns as written are compared in tests/unit/test_ldap_dn.py."""
    spaced = ", ".join(uid_dn("alice").split(","))
    shouting = uid_dn("bob").upper().replace("UID=BOB", "uid=B\\4fB")  # \4f is "O"
    directory.add(*group("spaced", [spaced, shouting]))
    path, store, connector = setup(tmp_path, directory)
    result = ldap.sync(connector, path, store)
    assert result.ok, result.error
    assert stored_docs(store, "meshUserGroup")["spaced"].document["spec"]["members"] == ["alice", "bob"]
