"""The engine over an in-memory platform: retries, failure isolation, the lookup cache, the guard,
the audit trail. (The AWS driver itself is tested against moto in tests/integration and tests/e2e.)"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from platforms.contract import PendingError, PlatformError, RetryableError
from replicator.core.config import Config
from replicator.core.inventory import (
    Inventory,
    MeshProject,
    MeshProjectBinding,
    MeshTenant,
    MeshUser,
    MeshWorkspace,
)
from replicator.engine.results import Changed, Converged, Failed, FailureKind, Requeue, RunReport
from replicator.engine.runner import Engine
from replicator.inputs.validate import Validated
from state import Store
from tests.support.memory_driver import MemoryDriver, Platform

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
P = "mem.one"


def config(**replication: Any) -> Config:
    return Config.model_validate(
        {
            "replication": replication,
            "platforms": [{"identifier": P, "type": "aws"}],
            "landingZones": [
                {
                    "identifier": "lz",
                    "platform": P,
                    "roleMappings": {
                        "admin": {"platformGroupAlias": "admin", "platformRoles": ["r-admin"]},
                        "reader": {"platformGroupAlias": "reader", "platformRoles": ["r-read"]},
                    },
                }
            ],
        }
    )


def inventory(bindings: dict[str, dict[str, list[str]]], users: list[str]) -> Inventory:
    """bindings: project -> role -> user names (euid = name)."""
    projects = sorted(bindings)
    return Inventory(
        users={
            u: MeshUser.model_validate({"kind": "meshUser", "metadata": {"name": u}, "spec": {"euid": u}})
            for u in users
        },
        workspaces={
            "ws": MeshWorkspace.model_validate({"kind": "meshWorkspace", "metadata": {"name": "ws"}})
        },
        projects={
            ("ws", p): MeshProject.model_validate(
                {"kind": "meshProject", "metadata": {"name": p, "ownedByWorkspace": "ws"}}
            )
            for p in projects
        },
        bindings=tuple(
            MeshProjectBinding.model_validate(
                {
                    "kind": "meshProjectBinding",
                    "metadata": {"ownedByWorkspace": "ws", "ownedByProject": p},
                    "spec": {"role": role, "subjects": [{"user": u} for u in members]},
                }
            )
            for p, roles in bindings.items()
            for role, members in roles.items()
            if members
        ),
        tenants={
            f"ws/{p}/{P}": MeshTenant.model_validate(
                {
                    "kind": "meshTenant",
                    "metadata": {"ownedByWorkspace": "ws", "ownedByProject": p, "platformIdentifier": P},
                    "spec": {"localId": f"acct-{p}", "landingZoneIdentifier": "lz"},
                }
            )
            for p in projects
        },
    )


class World:
    def __init__(self, tmp: Path, users: list[str]) -> None:
        self.platform = Platform()
        for u in users:
            self.platform.add_user(u)
        self.store = Store(f"sqlite:///{tmp / 'state.db'}")
        self.users = ["alice", "bob", "carol", "dave", *users]

    def run(
        self,
        bindings: dict[str, dict[str, list[str]]],
        *,
        apply: bool = True,
        allow_deletions: bool = False,
        **replication: Any,
    ) -> RunReport:
        v = Validated(
            config(**replication),
            inventory(bindings, sorted(set(self.users))),
            {P: MemoryDriver.capabilities},
        )
        engine = Engine(
            v,
            self.store,
            allow_deletions=allow_deletions,
            retry_wait=0.0,
            make_driver=lambda p: MemoryDriver(p.identifier, self.platform),
        )
        return asyncio.run(engine.run(engine.select(NOW), apply=apply, now=NOW))


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path, ["alice", "bob", "carol", "dave"])


TWO = {"a": {"admin": ["alice"], "reader": ["bob"]}, "b": {"admin": ["carol"], "reader": ["dave"]}}


def test_a_retryable_failure_is_retried_and_audited_once(world: World) -> None:
    world.platform.fail("add_member", RetryableError("throttled"))
    report = world.run({"a": {"admin": ["alice"]}})
    assert report.failed == []
    assert world.platform.calls["add_member"] == 2
    assert world.platform.member_names("mem-ws.a-admin") == ["alice"]
    trail = [(a.action, a.outcome) for a in world.store.audit_trail() if a.action == "add_member"]
    assert trail == [("add_member", "started"), ("add_member", "applied")]


def test_each_run_ends_with_one_typed_outcome(world: World) -> None:
    """Changed while it applies, Converged once there is nothing left, Failed with its kind when
    the platform refuses, and a plan (dry run) reports what is pending as Changed(0, n)."""
    first = world.run(TWO)  # per tenant: two groups created, two members added, two roles granted
    assert {r.outcome for r in first.results} == {Changed(applied=6, pending=0)}
    again = world.run(TWO)
    assert {r.outcome for r in again.results} == {Converged()}
    more = {"a": {"admin": ["alice", "bob"], "reader": ["bob"]}, "b": TWO["b"]}
    planned = {r.key: r.outcome for r in world.run(more, apply=False).results}
    assert planned == {f"ws/a/{P}": Changed(applied=0, pending=1), f"ws/b/{P}": Converged()}
    world.platform.fail("add_member", *[PlatformError("refused")] * 3)
    outcomes = {r.key: r.outcome for r in world.run(more).results}
    assert outcomes[f"ws/b/{P}"] == Converged()
    failed = outcomes[f"ws/a/{P}"]
    assert isinstance(failed, Failed)
    assert failed.kind is FailureKind.PLATFORM
    assert "refused" in failed.error


def test_a_failing_tenant_does_not_stop_the_others(world: World) -> None:
    world.platform.fail("grant", *[RetryableError("down")] * 3, group="mem-ws.a-admin")  # all three attempts
    report = world.run(TWO)
    failed = {r.key: r for r in report.failed}
    assert list(failed) == [f"ws/a/{P}"]
    assert failed[f"ws/a/{P}"].error_kind == "unavailable", "transient, told apart from a refusal"
    assert "grant mem-ws.a-admin r-admin: down" in str(failed[f"ws/a/{P}"].error)
    assert world.platform.member_names("mem-ws.b-admin") == ["carol"]
    runs = {r.tenant: r.outcome for r in world.store.last_runs()}
    assert runs == {f"ws/a/{P}": "failed", f"ws/b/{P}": "converged"}
    failed_rows = [a for a in world.store.audit_trail(f"ws/a/{P}") if a.outcome == "failed"]
    assert [(a.action, a.error) for a in failed_rows] == [("grant", "down")]


def test_a_failed_lookup_fails_the_platform_and_changes_nothing(world: World) -> None:
    world.platform.fail("lookup_users", PlatformError("directory unreachable"))
    report = world.run(TWO)
    assert sorted((r.key, r.error_kind) for r in report.failed) == [
        (f"ws/a/{P}", "lookup"),
        (f"ws/b/{P}", "lookup"),
    ]
    assert world.platform.calls["observe"] == 0
    assert world.platform.groups == {}


def test_a_failed_observation_changes_nothing(world: World) -> None:
    world.run(TWO)
    # The tenants run concurrently: the failure is a's, whichever of them observes first.
    world.platform.fail("observe", PlatformError("page 2 timed out"), group=f"ws/a/{P}")
    report = world.run({"a": {"admin": [], "reader": []}, "b": TWO["b"]}, allow_deletions=True)
    assert [r.key for r in report.failed] == [f"ws/a/{P}"]
    assert world.platform.member_names("mem-ws.a-admin") == ["alice"], "a partial read never shrinks the plan"


def test_found_users_are_cached_not_found_are_asked_again(world: World) -> None:
    world.users.append("zoe")
    world.run({"a": {"admin": ["alice"], "reader": ["zoe"]}})
    assert world.platform.calls["lookup_users"] == 1
    world.run({"a": {"admin": ["alice"], "reader": ["zoe"]}})
    assert world.platform.calls["lookup_users"] == 2, "zoe was not found: asked again"
    world.platform.add_user("zoe")
    report = world.run({"a": {"admin": ["alice"], "reader": ["zoe"]}})
    assert report.results[0].applied == 1
    assert world.platform.member_names("mem-ws.a-reader") == ["zoe"]
    before = world.platform.calls["lookup_users"]
    world.run({"a": {"admin": ["alice"], "reader": ["zoe"]}})
    assert world.platform.calls["lookup_users"] == before, "everyone is cached now"


def test_guard_withholds_removals_but_applies_additions(world: World) -> None:
    world.run({"a": {"admin": ["alice", "bob", "carol"], "reader": ["dave"]}})
    report = world.run({"a": {"admin": [], "reader": ["dave", "alice"]}})
    (r,) = report.results
    assert r.error_kind == "guard"
    assert r.plan is not None
    assert [c.action.value for c in r.plan.withheld] == ["remove_member"] * 3
    assert world.platform.member_names("mem-ws.a-reader") == ["alice", "dave"]
    assert world.platform.member_names("mem-ws.a-admin") == ["alice", "bob", "carol"]
    assert world.store.last_runs()[0].outcome == "failed"
    world.run({"a": {"admin": [], "reader": ["dave", "alice"]}}, allow_deletions=True)
    assert world.platform.member_names("mem-ws.a-admin") == []


def test_a_count_limit(world: World) -> None:
    world.run({"a": {"admin": ["alice", "bob", "carol"], "reader": ["dave"]}})
    blocked = world.run({"a": {"admin": ["alice"], "reader": ["dave"]}}, maxDeletions=1)
    assert blocked.results[0].error_kind == "guard"
    ok = world.run({"a": {"admin": ["alice"], "reader": ["dave"]}}, maxDeletions=2)
    assert ok.failed == []
    assert world.platform.member_names("mem-ws.a-admin") == ["alice"]


def test_dry_run_writes_nothing_to_platform_or_run_history(world: World) -> None:
    report = world.run(TWO, apply=False)
    assert report.pending == 12  # per tenant: 2 groups, 2 members, 2 grants
    assert world.platform.groups == {}
    assert world.store.last_runs() == []
    assert world.store.audit_trail() == []


def test_a_group_that_vanished_is_forgotten_and_recreated(world: World) -> None:
    world.run({"a": {"admin": ["alice"]}})
    gone = world.platform.by_name("mem-ws.a-admin")
    assert gone is not None
    del world.platform.groups[gone.id]
    world.run({"a": {"admin": ["alice"]}})
    again = world.platform.by_name("mem-ws.a-admin")
    assert again is not None
    assert again.id != gone.id
    assert world.platform.member_names("mem-ws.a-admin") == ["alice"]
    owned = {o.name: o.platform_id for o in world.store.owned_groups(P, f"ws/a/{P}")}
    assert owned["mem-ws.a-admin"] == again.id


def test_the_store_records_the_members_the_engine_added_and_removed(world: World) -> None:
    world.run({"a": {"admin": ["alice", "bob"]}})
    world.run({"a": {"admin": ["bob", "carol"]}})
    (record,) = [o for o in world.store.owned_groups(P, f"ws/a/{P}") if o.alias == "admin"]
    group = world.platform.by_name("mem-ws.a-admin")
    assert group is not None
    assert record.members == frozenset(group.members)
    assert world.platform.member_names("mem-ws.a-admin") == ["bob", "carol"]


def test_an_unexpected_driver_error_fails_only_its_tenant(world: World) -> None:
    world.platform.fail("add_member", KeyError("bug"), group="mem-ws.a-admin")
    report = world.run(TWO)
    (failed,) = report.failed
    assert (failed.key, failed.error_kind) == (f"ws/a/{P}", "internal")
    assert failed.applied == 2, "the two creates before the failing change are counted"
    assert world.platform.member_names("mem-ws.b-admin") == ["carol"]
    assert world.store.last_runs(f"ws/a/{P}")[0].changes_applied == 2


def test_a_driver_that_cannot_start_fails_its_tenants(world: World, tmp_path: Path) -> None:
    from platforms.contract import PlatformConfigError

    def broken(_platform: Any) -> MemoryDriver:
        raise PlatformConfigError("no credentials")

    v = Validated(config(), inventory(TWO, world.users), {P: MemoryDriver.capabilities})
    engine = Engine(v, world.store, make_driver=broken)
    report = asyncio.run(engine.run(engine.select(NOW), apply=True, now=NOW))
    assert [(r.key, r.error_kind, r.error) for r in report.results] == [
        (f"ws/a/{P}", "platform", "no credentials"),
        (f"ws/b/{P}", "platform", "no credentials"),
    ]


def test_retry_after_is_honoured_and_a_long_one_fails_fast(world: World) -> None:
    world.platform.fail("add_member", RetryableError("slow down", retry_after=0.2), group="mem-ws.a-admin")
    started = time.monotonic()
    report = world.run({"a": {"admin": ["alice"]}})
    assert report.failed == []
    assert time.monotonic() - started >= 0.2, "it waited as long as the platform asked"

    world.platform.fail(
        "add_member", RetryableError("come back tomorrow", retry_after=86400), group="mem-ws.b-admin"
    )
    report = world.run({"a": {"admin": ["alice"]}, "b": {"admin": ["carol"]}})
    (failed,) = report.failed
    assert failed.key == f"ws/b/{P}"
    assert "come back tomorrow" in str(failed.error)
    assert world.platform.calls["add_member"] == 3, "a: 2 attempts; b: 1 attempt, no retry"


def test_a_platform_catching_up_requeues_the_tenant_instead_of_failing_it(world: World) -> None:
    """A change the platform cannot take yet because it has not caught up with this run's own
    create (eventual consistency) is retried within the run; past the run the tenant ends pending:
    Requeue(after), a PLATFORM_PENDING warning, a "pending" run record, no failure. The next run
    finishes it and the warning clears."""
    lag = [PendingError("group not replicated yet")] * 3  # every attempt of this run
    world.platform.fail("grant", *lag, group="mem-ws.a-admin")
    report = world.run({"a": {"admin": ["alice"]}, "b": {"admin": ["carol"]}})
    assert report.failed == []
    outcomes = {r.key: r.outcome for r in report.results}
    assert outcomes[f"ws/b/{P}"] == Changed(applied=5)  # two groups, one member, two roles
    pending = outcomes[f"ws/a/{P}"]
    assert isinstance(pending, Requeue)
    assert pending.after == 30.0, "the default delay when the platform did not say"
    assert "grant mem-ws.a-admin r-admin: group not replicated yet" in pending.reason
    assert world.platform.calls["grant"] == 3 + 2, "a: retried within the run; b: its two roles once"
    runs = {r.tenant: (r.outcome, r.changes_applied, r.changes_pending) for r in world.store.last_runs()}
    assert runs[f"ws/a/{P}"] == ("pending", 3, 2), "groups created, member added; both grants to do"
    (warning,) = world.store.open_warnings(f"ws/a/{P}")
    assert (warning.code, warning.subject) == ("PLATFORM_PENDING", "mem-ws.a-admin")

    again = world.run({"a": {"admin": ["alice"]}, "b": {"admin": ["carol"]}})
    assert {r.key: r.outcome for r in again.results} == {
        f"ws/a/{P}": Changed(applied=2),
        f"ws/b/{P}": Converged(),
    }
    assert world.store.open_warnings(f"ws/a/{P}") == []
    assert world.platform.by_name("mem-ws.a-admin").roles == {"acct-a": {"r-admin"}}


def test_a_pending_platform_asking_for_a_long_wait_is_requeued_at_once(world: World) -> None:
    world.platform.fail("add_member", PendingError("principal not found yet", retry_after=90))
    started = time.monotonic()
    (result,) = world.run({"a": {"admin": ["alice"]}}).results
    assert time.monotonic() - started < 5, "not waited out within the run"
    assert result.outcome == Requeue(90, result.pending or "")
    assert world.platform.calls["add_member"] == 1
