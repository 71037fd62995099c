"""The CLI against moto through the fault-injecting proxy (tests/support/faults.py).

Faulty ``reconcile --all`` runs (20% of requests: 429, 500, 503, slow answers, connections dropped
before or after the upstream applied the call) are followed by a fault-free run that must converge.
What converged is read from moto directly with plain boto3; the helpers here (``World``,
``check_*``) are shared with the randomized scenario test.
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from platforms.kit import OWNER_MARKER, is_marked
from state import Store
from tests.e2e.conftest import (
    ACCOUNTS,
    PLATFORM,
    Project,
    Result,
    binding,
    project,
    standard_inventory,
    tenant,
    user,
    workspace,
)
from tests.e2e.test_reconcile_openstack import OsProject
from tests.e2e.test_reconcile_openstack import os_proj as os_proj  # the Keystone fixture
from tests.support.faults import FAULTS, FaultProxy, Request
from tests.support.moto_aws import MotoAws

ROLES = ("admin", "user", "reader")
USERS = ("alice", "bob", "carol", "dave", "erin")
AUDIT_ACCOUNT = "333333333333"


# --- reading moto: shared with test_scenarios --------------------------------------------------


@dataclass
class World:
    """Everything on moto that matters here, read with plain boto3 (lists: duplicates stay visible)."""

    groups: list[tuple[str, str, str | None]]  # (id, name, description)
    members: dict[str, list[str]]  # group id -> user ids, one per membership
    assignments: dict[tuple[str, str], list[tuple[str, str]]]  # (account, ps) -> (type, principal)

    @classmethod
    def read(cls, aws: MotoAws, accounts: list[str], permission_sets: list[str]) -> World:
        raw = aws._groups()
        groups = [(g["GroupId"], g["DisplayName"], g.get("Description")) for g in raw]
        members = {gid: aws.members(gid) for gid, _, _ in groups}
        assignments = {(a, ps): aws.assignments(a, ps) for a in accounts for ps in permission_sets}
        return cls(groups, members, assignments)

    def by_name(self) -> dict[str, str]:
        return {name: gid for gid, name, _ in self.groups}

    def ours(self) -> dict[str, str]:
        """name -> id of the groups carrying our marker."""
        return {name: gid for gid, name, desc in self.groups if desc and is_marked(desc)}


def check_no_duplicates(world: World) -> None:
    names = Counter(name for _, name, _ in world.groups)
    assert [n for n, c in names.items() if c > 1] == [], "duplicate groups"
    for gid, members in world.members.items():
        assert len(members) == len(set(members)), f"duplicate memberships in {gid}: {members}"
    for key, rows in world.assignments.items():
        assert len(rows) == len(set(rows)), f"duplicate assignments {key}: {rows}"


@dataclass(frozen=True)
class Foreign:
    """Objects someone else made: they must look exactly like this after every run."""

    groups: dict[str, tuple[str, str | None, tuple[str, ...]]] = field(default_factory=dict)
    assignments: set[tuple[str, str, str]] = field(default_factory=set)  # (account, ps, group id)

    def check(self, world: World) -> None:
        now = {gid: (name, desc) for gid, name, desc in world.groups}
        for gid, (name, desc, members) in self.groups.items():
            assert now.get(gid) == (name, desc), f"foreign group {name} changed or deleted"
            assert tuple(sorted(world.members.get(gid, []))) == members, f"members of foreign {name} changed"
        for account, ps, gid in self.assignments:
            rows = world.assignments.get((account, ps))
            if rows is not None:
                assert ("GROUP", gid) in rows, f"foreign assignment {ps} on {account} to {gid} removed"


def check_store(store: Store, world: World, tenants: dict[str, str], stale_ok: bool = False) -> list[str]:
    """The store's owned groups of each tenant (key -> account) exist on moto with our marker, the
    recorded id, and the recorded members and roles (the store may know less than moto, never more);
    and every group with our marker on moto is recorded for the tenant its marker names.

    With ``stale_ok`` recorded members and roles moto does not have are returned instead of failing
    (for tenants no run corrected since a lost answer, e.g. tenants left alone)."""
    stale: list[str] = []
    ours = world.ours()
    recorded: set[str] = set()
    descriptions = {gid: desc for gid, _, desc in world.groups}
    for key, account in tenants.items():
        for rec in store.owned_groups(PLATFORM, key):
            assert rec.state == "active", f"{rec.name}: left {rec.state}"
            assert rec.name in ours, f"store records {rec.name} for {key}, moto has no such group of ours"
            assert rec.platform_id == ours[rec.name]
            assert descriptions[rec.platform_id] == f"{OWNER_MARKER} tenant={key}"
            gone = sorted(rec.members - set(world.members[rec.platform_id]))
            extra = [f"{rec.name}: member {u}" for u in gone]
            extra += [
                f"{rec.name}: role {ps}"
                for ps in sorted(rec.roles)
                if ("GROUP", rec.platform_id) not in world.assignments[(account, ps)]
            ]
            assert stale_ok or extra == [], f"the store records what moto does not have: {extra}"
            stale += extra
            recorded.add(rec.name)
    assert set(ours) == recorded, f"groups with our marker the store does not record: {set(ours) - recorded}"
    return stale


def access(world: World, accounts: dict[str, str], ps: dict[str, str]) -> set[tuple[str, str, str]]:
    """(tenant key, role, user id): who can use which permission set on which tenant's account."""
    out: set[tuple[str, str, str]] = set()
    for key, account in accounts.items():
        for role, arn in ps.items():
            for kind, principal in world.assignments.get((account, arn), []):
                if kind == "GROUP":
                    out |= {(key, role, uid) for uid in world.members.get(principal, [])}
    return out


# --- the standard three-tenant setup ------------------------------------------------------------


def tenants_of(project_names: list[str]) -> dict[str, str]:
    accounts = {"ledger": ACCOUNTS["ledger"], "payroll": ACCOUNTS["payroll"], "audit": AUDIT_ACCOUNT}
    return {f"finance/{p}/{PLATFORM}": accounts[p] for p in project_names}


def inventory() -> list[dict[str, Any]]:
    docs = [user(n, n) for n in USERS] + [workspace("finance")]
    for key, account in tenants_of(["ledger", "payroll", "audit"]).items():
        prj = key.split("/")[1]
        docs += [project("finance", prj), tenant("finance", prj, account)]
    docs += [
        binding("finance", "ledger", "admin", "alice"),
        binding("finance", "ledger", "user", "bob", "carol"),
        binding("finance", "ledger", "reader", "dave"),
        binding("finance", "payroll", "admin", "bob"),
        binding("finance", "payroll", "user", "erin"),
        binding("finance", "payroll", "reader", "alice", "carol"),
        binding("finance", "audit", "admin", "carol"),
        binding("finance", "audit", "reader", "dave", "erin"),
    ]
    return docs


EXPECTED = {  # group -> members, for the inventory above (audit's reader name is taken by hand)
    "mst-finance.ledger-admin": ["alice"],
    "mst-finance.ledger-user": ["bob", "carol"],
    "mst-finance.ledger-reader": ["dave"],
    "mst-finance.payroll-admin": ["bob"],
    "mst-finance.payroll-user": ["erin"],
    "mst-finance.payroll-reader": ["alice", "carol"],
    "mst-finance.audit-admin": ["carol"],
    "mst-finance.audit-user": [],
}


def run(proj: Project, *args: str) -> Result:
    r = proj.cli(*args)
    assert "Traceback" not in r.err, r.err
    assert "Traceback" not in r.out, r.out
    assert r.code in (0, 1), r.out + r.err
    return r


def fail_then_converge(proj: Project, proxy: FaultProxy, match: Callable[[Request], bool]) -> None:
    """A run in which every request ``match`` picks reaches moto but its answer is lost (the run
    fails), then a run without faults (it converges)."""
    proxy.match = match
    proxy.set_faults({"drop_after": 1.0})
    proxy.rate = 1.0
    assert run(proj, "reconcile", "--all").code == 1
    proxy.rate = 0.0
    assert run(proj, "reconcile", "--all").code == 0


@pytest.fixture
def proxy(proj: Project) -> Iterator[FaultProxy]:
    """The proxy in front of moto, and the project's AWS platform pointed at it (no botocore retries:
    the engine retries a change itself, after checking whether it is already true)."""
    with FaultProxy(proj.aws.url, seed=20261123, slow_seconds=0.3, aws_conflicts=True) as p:
        proj.platform_extra = {
            "aws": proj.aws.driver_options(endpointUrl=p.url, pollInterval=0.01, maxAttempts=1)
        }
        proj.write_config()
        yield p
        assert p.errors == []


def test_reconcile_through_faults_converges_and_harms_nothing(proj: Project, proxy: FaultProxy) -> None:
    aws = proj.aws
    # Someone else's objects: a group with the name we would give audit's readers, an unrelated
    # group granted admin on ledger's account by hand.
    taken = aws.create_group("mst-finance.audit-reader", "made by hand")
    aws.add_member(taken, proj.users["erin"])
    ops = aws.create_group("ops-team", "the operators")
    aws.add_member(ops, proj.users["alice"])
    aws.add_member(ops, proj.users["dave"])
    aws.assign(ACCOUNTS["ledger"], proj.ps["admin"], ops)
    aws.assign(AUDIT_ACCOUNT, proj.ps["reader"], taken)
    foreign = Foreign(
        groups={
            taken: ("mst-finance.audit-reader", "made by hand", (proj.users["erin"],)),
            ops: ("ops-team", "the operators", tuple(sorted((proj.users["alice"], proj.users["dave"])))),
        },
        assignments={(ACCOUNTS["ledger"], proj.ps["admin"], ops), (AUDIT_ACCOUNT, proj.ps["reader"], taken)},
    )
    proj.write_inventory(inventory())
    tenants = tenants_of(["ledger", "payroll", "audit"])
    accounts, arns = sorted(set(tenants.values())), sorted(proj.ps.values())

    proxy.rate = 0.2
    codes = [run(proj, "reconcile", "--all").code for _ in range(4)]
    world = World.read(aws, accounts, arns)
    check_no_duplicates(world)
    foreign.check(world)  # (the store is compared once converged: a failed create leaves it pending)

    proxy.rate = 0.0
    final = run(proj, "reconcile", "--all")
    assert final.code == 0, final.out + final.err
    assert "FOREIGN_GROUP_NAME_TAKEN" in final.out
    assert run(proj, "plan", "--detailed-exitcode").code == 0

    world = World.read(aws, accounts, arns)
    check_no_duplicates(world)
    foreign.check(world)
    ours = world.ours()
    assert sorted(ours) == sorted(EXPECTED)
    names = {v: k for k, v in proj.users.items()}
    for name, expected in EXPECTED.items():
        assert sorted(names[u] for u in world.members[ours[name]]) == expected, name
    for key, account in tenants.items():
        prj = key.split("/")[1]
        for role in ROLES:
            rows = world.assignments[(account, proj.ps[role])]
            group = f"mst-finance.{prj}-{role}"
            if group in ours:
                assert ("GROUP", ours[group]) in rows
    with proj.store() as store:
        check_store(store, world, tenants)
    snap = proxy.snapshot()
    assert sum(snap.get(k, 0) for k in FAULTS) >= 10, snap  # ~20% of a few hundred requests
    assert snap["forwarded"] > 0
    assert codes.count(1) >= 1, "faults at 20% must have failed some tenant in four runs"


_WRITES = (
    "AWSIdentityStore.CreateGroup",
    "AWSIdentityStore.CreateGroupMembership",
    "SWBExternalService.CreateAccountAssignment",
)


def test_writes_whose_answer_was_lost_are_not_repeated(proj: Project, proxy: FaultProxy) -> None:
    """Every create reaches moto, but its answer never reaches the client (connection dropped after
    forwarding). moto stores duplicate memberships and assignments where AWS refuses them: the
    driver must find what it already made instead of making it again."""
    proxy.match = lambda r: r.operation in _WRITES
    proxy.set_faults({"drop_after": 1.0})
    proxy.rate = 1.0
    first = run(proj, "reconcile", "--all")
    assert proxy.counts["drop_after"] >= 3
    # maxAttempts: 1 is one attempt (botocore's total_max_attempts): botocore does not repeat a
    # write whose connection dropped; a repeat would reach the proxy as a conflict, as on AWS.
    assert proxy.counts.get("conflict", 0) == 0
    assert first.code in (0, 1)
    proxy.rate = 0.0
    assert run(proj, "reconcile", "--all").code == 0
    assert run(proj, "plan", "--detailed-exitcode").code == 0
    world = World.read(proj.aws, [ACCOUNTS["ledger"]], sorted(proj.ps.values()))
    check_no_duplicates(world)
    assert proj.member_names("mst-finance.ledger-user") == ["bob", "carol"]
    assert sorted(world.ours()) == [f"mst-finance.ledger-{r}" for r in ("admin", "reader", "user")]
    with proj.store() as store:
        check_store(store, world, {f"finance/ledger/{PLATFORM}": ACCOUNTS["ledger"]})


def test_a_grant_whose_answer_was_lost_is_revoked_when_unmapped(proj: Project, proxy: FaultProxy) -> None:
    """The first grant reaches moto but every answer about it is lost (its own and those of the
    checks the engine's retries make): the tenant fails. The next run finds the role present and
    desired and records it as ours, so once the mapping moves to another permission set the old
    one is revoked (it was the replicator's grant)."""
    seen_create = threading.Event()

    def lose_first_grant(r: Request) -> bool:
        if r.operation == "SWBExternalService.CreateAccountAssignment" and not seen_create.is_set():
            seen_create.set()
            return True  # applied by moto, answer lost
        # every later look at the assignments fails, so the engine never learns the grant succeeded
        return seen_create.is_set() and r.operation == "SWBExternalService.ListAccountAssignments"

    fail_then_converge(proj, proxy, lose_first_grant)
    world = World.read(proj.aws, [ACCOUNTS["ledger"]], sorted(proj.ps.values()))
    ours = world.ours()
    with proj.store() as store:
        records = store.owned_groups(PLATFORM, f"finance/ledger/{PLATFORM}")
    # The run after the loss found the role present and desired: the store records it as ours.
    assert {r.alias: sorted(r.roles) for r in records} == {
        role: [proj.ps[role]] for role in ("admin", "user", "reader")
    }
    old = dict(proj.ps)
    for role in old:
        proj.ps[role] = proj.aws.create_permission_set(f"{role}-v2")
    proj.write_config()
    assert run(proj, "reconcile", "--all").code == 0
    for role, arn in old.items():
        group_id = ours[f"mst-finance.ledger-{role}"]
        still = proj.aws.assignments(ACCOUNTS["ledger"], arn)
        assert ("GROUP", group_id) not in still, f"{role}: a role no mapping asks for is kept"


def test_a_removal_whose_answer_was_lost_is_forgotten(proj: Project, proxy: FaultProxy) -> None:
    """The store's members are what the replicator added and has not removed since. A removal that
    reached moto but whose answer (and every later check of it) was lost fails the tenant; the next
    run finds nothing to do, and the store still says the replicator's membership exists."""
    run(proj, "reconcile", "--all")
    proj.write_inventory(standard_inventory(admin=("alice",), user=("bob",), reader=("dave",)))
    seen_delete = threading.Event()

    def lose_the_removal(r: Request) -> bool:
        if r.operation == "AWSIdentityStore.DeleteGroupMembership":
            seen_delete.set()
            return True  # applied by moto (its repeats find nothing), answer lost
        return seen_delete.is_set() and r.operation == "AWSIdentityStore.GetGroupMembershipId"

    fail_then_converge(proj, proxy, lose_the_removal)
    assert proj.member_names("mst-finance.ledger-user") == ["bob"]
    world = World.read(proj.aws, [ACCOUNTS["ledger"]], sorted(proj.ps.values()))
    with proj.store() as store:
        check_store(store, world, {f"finance/ledger/{PLATFORM}": ACCOUNTS["ledger"]})


# --- the proxy itself, against a trivial upstream ---------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: list[str] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).hits.append(body.decode())
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def echo() -> Iterator[str]:
    _Echo.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _post(url: str, body: str, timeout: float = 5.0) -> tuple[int, dict[str, str], str] | str:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("POST", "/x", body.encode(), {"Content-Type": "text/plain"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        conn.close()


def test_proxy_injects_every_fault_with_a_seed(echo: str) -> None:
    requests = 40
    with FaultProxy(echo, rate=0.5, seed=8, slow_seconds=1.5) as proxy:
        seen: list[str] = []
        for i in range(requests):
            got = _post(proxy.url, f"req{i}", timeout=1.0)  # shorter than a slow answer
            if isinstance(got, str):
                seen.append("dropped")
                continue
            status, headers, body = got
            seen.append(str(status))
            if status == 429:
                assert headers["retry-after"] in ("0", "1")
            if status == 200:
                assert body == f"req{i}"
        faults = {k: proxy.counts[k] for k in FAULTS}
        assert all(n > 0 for n in faults.values()), faults
        # drop_after and slow reached the upstream; drop_before and the error answers did not
        assert len(_Echo.hits) == requests - sum(faults.values()) + faults["drop_after"] + faults["slow"]
        assert proxy.counts["forwarded"] == len(_Echo.hits)
        assert seen.count("dropped") == faults["drop_before"] + faults["drop_after"] + faults["slow"]
        for answer in ("429", "500", "503"):
            assert seen.count(answer) == faults[answer]
        proxy.rate = 0.0
        for _ in range(10):
            got = _post(proxy.url, "calm")
            assert not isinstance(got, str)
            assert got[0] == 200
        assert proxy.injected == sum(faults.values())
        decided = [fault for _, fault in proxy.log[:requests]]
    # one seed, one sequence of faults (decided without any network here)
    again = FaultProxy(echo, rate=0.5, seed=8)
    assert [again._decide(Request("POST", "/x", {}, b""))[0] or "ok" for _ in range(requests)] == decided


def test_proxy_match_limits_faults_to_chosen_requests(echo: str) -> None:
    with FaultProxy(echo, rate=1.0, seed=1, faults={"503": 1}, match=lambda r: r.body == b"write") as proxy:
        read, write = _post(proxy.url, "read"), _post(proxy.url, "write")
        assert not isinstance(read, str)
        assert not isinstance(write, str)
        assert read[0] == 200
        assert write[0] == 503
        assert "retry-after" in write[1]
        assert proxy.injected == 1
        assert _Echo.hits == ["read"]
    assert Request("GET", "/v3/users", {}, b"").operation == "GET /v3/users"
    assert Request("POST", "/", {"x-amz-target": "AWSIdentityStore.CreateGroup"}, b"").operation == (
        "AWSIdentityStore.CreateGroup"
    )


def test_proxy_quota_answers_429_once_its_bucket_is_empty(echo: str) -> None:
    """``quota``: a token bucket of N requests/s, full (N) at the start; a request that finds it
    empty gets a 429 with Retry-After of at least 1 s and is not forwarded."""
    with FaultProxy(echo, quota=2) as proxy:
        decided = [proxy._decide(Request("POST", "/x", {}, b""))[0] for _ in range(5)]
        assert decided[:2] == [None, None], "the bucket holds 2 at the start"
        assert decided[2:] == ["429"] * 3, "refilled by 2/s: not one token within these few calls"
        assert (proxy.counts["quota"], proxy.counts["429"]) == (3, 3)
    with FaultProxy(echo, quota=0.001) as proxy:  # not one whole token for 1,000 s
        got = _post(proxy.url, "over")
        assert not isinstance(got, str)
        assert got[0] == 429
        assert int(got[1]["retry-after"]) >= 1
        assert _Echo.hits == []


# --- Keystone through the proxy -----------------------------------------------------------------


@pytest.mark.integration
def test_keystone_through_faults_converges(os_proj: OsProject) -> None:
    """The OpenStack driver through the proxy: Keystone's own URL and the identity endpoint both
    point at it, with a 0.5 s client timeout so that slow answers (1 s) really time out after
    Keystone applied the call. 429s carry Retry-After, which this driver honours."""
    world = os_proj.world
    base, _, path = world.ks.url.partition("/v3")
    taken = world.conn.identity.create_group(
        name="finance.payroll-user", domain_id=world.domain.id, description="made by hand"
    )
    erin = world.conn.identity.find_user("erin@example.com", domain_id=world.domain.id)
    world.conn.identity.add_user_to_group(erin, taken)
    with FaultProxy(base, rate=0.2, seed=11, slow_seconds=1.0) as proxy:
        url = f"{proxy.url}/v3{path}"
        os_proj.driver_extra = {"authUrl": url, "endpointOverride": url, "timeout": 0.5}
        os_proj.write_config()
        os_proj.write_inventory(
            os_proj.inventory(extra=[binding("finance", "payroll", "user", "bob", "carol")])
        )
        for _ in range(5):
            r = os_proj.cli("reconcile", "--all")
            assert "Traceback" not in r.err, r.err
            assert r.code in (0, 1), r.out + r.err
        proxy.rate = 0.0
        final = os_proj.cli("reconcile", "--all")
        assert final.code == 0, final.out + final.err
        assert os_proj.cli("plan", "--detailed-exitcode").code == 0
        assert proxy.errors == []
        assert proxy.injected >= 3, proxy.snapshot()
    groups = world.groups()
    assert sorted(groups) == sorted(
        [f"finance.{p}-{a}" for p in ("ledger", "payroll") for a in ("admin", "user", "reader")]
    )
    assert os_proj.members("finance.ledger-admin") == ["alice"]
    assert os_proj.members("finance.ledger-user") == ["bob", "carol"]
    assert os_proj.members("finance.ledger-reader") == ["dave"]
    assert os_proj.members("finance.payroll-admin") == ["erin"]
    assert groups["finance.payroll-user"].description == "made by hand"
    assert os_proj.members("finance.payroll-user") == ["erin"], "the foreign group was touched"
    assert os_proj.roles("finance.payroll-user", "payroll") == []
    assert os_proj.roles("finance.ledger-admin") == sorted(["member", "heat_stack_owner"])
    assert os_proj.roles("finance.ledger-reader") == ["reader"]
