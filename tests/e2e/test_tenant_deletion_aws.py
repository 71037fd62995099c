"""The tenant deletion life cycle against a real moto server: ``deleted: true`` and tenants removed
from the inventory, in stages (access revoked, then groups deleted, then the record Deleted), across
runs that fail between stages. What happened is read from moto and from the store's audit trail."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from platforms.aws import AwsDriver
from platforms.contract import Action, Change, Driver, PlatformError, TenantRef
from replicator.engine.runner import Engine, default_driver
from replicator.inputs.loader import load
from replicator.inputs.validate import validate
from tests.e2e.conftest import ACCOUNTS, PLATFORM, Project, binding, project, standard_inventory, tenant

LEDGER = f"finance/ledger/{PLATFORM}"
PAYROLL = f"finance/payroll/{PLATFORM}"
GROUPS = ["mst-finance.ledger-admin", "mst-finance.ledger-reader", "mst-finance.ledger-user"]


def converge(proj: Project, *extra: str) -> str:
    r = proj.cli("reconcile", "--all", *extra)
    assert r.code == 0, r.out + r.err
    return r.out


def deleted_inventory() -> list[dict[str, Any]]:
    docs = [d for d in standard_inventory() if d["kind"] != "meshTenant"]
    return [*docs, tenant("finance", "ledger", ACCOUNTS["ledger"], deleted=True)]


def assignments(proj: Project) -> list[tuple[str, str]]:
    account = ACCOUNTS["ledger"]
    return [a for role in ("admin", "user", "reader") for a in proj.aws.assignments(account, proj.ps[role])]


class FailOnce(Driver):
    """The real AWS driver, except that the n-th change of one action fails once (a platform outage
    in the middle of a deletion). Fault injection at our own driver seam, not in the SDK."""

    capabilities = AwsDriver.capabilities
    options_model = AwsDriver.options_model

    def __init__(self, inner: Driver, action: Action, nth: int) -> None:
        super().__init__(inner.identifier, inner.options)
        self.inner, self.action, self.nth, self.seen = inner, action, nth, 0

    async def lookup_users(self, euids: Any) -> Any:
        return await self.inner.lookup_users(euids)

    async def observe(self, tenant: TenantRef, owned: Any, desired_names: Any) -> Any:
        return await self.inner.observe(tenant, owned, desired_names)

    async def apply(self, tenant: TenantRef, change: Change, group_id: str | None) -> str | None:
        if change.action is self.action:
            self.seen += 1
            if self.seen == self.nth:
                raise PlatformError("injected outage")
        return await self.inner.apply(tenant, change, group_id)

    async def close(self) -> None:
        await self.inner.close()


def run_with_fault(proj: Project, action: Action, nth: int) -> str | None:
    v = validate(load(proj.config_path))
    with proj.store() as store:
        engine = Engine(
            v, store, make_driver=lambda p: FailOnce(default_driver(p), action, nth), change_attempts=1
        )
        now = datetime.now(UTC)
        report = asyncio.run(engine.run(engine.select(now, [LEDGER]), apply=True, now=now))
    (result,) = report.results
    return result.error


def audit_actions(proj: Project) -> list[tuple[str, str]]:
    with proj.store() as store:
        trail = store.audit_trail(LEDGER)
    return [(a.action, a.outcome) for a in trail if a.action in ("revoke", "delete_group")]


def revocations_precede_deletions(proj: Project) -> None:
    applied = [a for a, outcome in audit_actions(proj) if outcome == "applied"]
    assert "delete_group" in applied
    assert applied.index("delete_group") > max(i for i, a in enumerate(applied) if a == "revoke")


def test_a_failed_deletion_resumes_at_its_stage(proj: Project) -> None:
    converge(proj)
    proj.write_inventory(deleted_inventory())

    error = run_with_fault(proj, Action.DELETE_GROUP, nth=2)
    assert error is not None
    assert "injected outage" in error
    assert assignments(proj) == [], "every role is revoked before the first group is deleted"
    assert len(proj.aws.groups()) == 2, "one group deleted, then the outage"
    with proj.store() as store:
        assert store.tenant_statuses()[LEDGER] == "DeletingGroups"

    converge(proj)
    assert proj.aws.groups() == {}
    with proj.store() as store:
        assert store.tenant_statuses()[LEDGER] == "Deleted"
        assert store.owned_groups(PLATFORM, LEDGER) == []
    revocations_precede_deletions(proj)
    status = proj.cli("status", "--tenant", LEDGER)
    assert "[Deleted]" in status.out


def test_a_failure_while_revoking_never_skips_revocation(proj: Project) -> None:
    converge(proj)
    proj.write_inventory(deleted_inventory())

    error = run_with_fault(proj, Action.REVOKE, nth=2)
    assert error is not None
    assert sorted(proj.aws.groups()) == GROUPS, "no group is deleted while roles remain"
    assert len(assignments(proj)) == 2
    with proj.store() as store:
        assert store.tenant_statuses()[LEDGER] == "Revoking"

    converge(proj)
    assert assignments(proj) == []
    assert proj.aws.groups() == {}
    revocations_precede_deletions(proj)


def test_skip_group_cleanup_revokes_and_keeps_the_groups(proj: Project) -> None:
    converge(proj)
    proj.platform_extra = {"skipGroupCleanup": True}
    proj.write_config()
    proj.write_inventory(deleted_inventory())
    converge(proj)
    assert assignments(proj) == []
    assert sorted(proj.aws.groups()) == GROUPS
    assert proj.member_names("mst-finance.ledger-user") == ["bob", "carol"]
    with proj.store() as store:
        assert store.tenant_statuses()[LEDGER] == "Deleted"
    assert proj.cli("plan", "--detailed-exitcode").code == 0, "a deleted tenant stays converged"


def two_tenants(with_payroll: bool = True) -> list[dict[str, Any]]:
    docs = standard_inventory()
    if with_payroll:
        docs += [
            project("finance", "payroll"),
            tenant("finance", "payroll", ACCOUNTS["payroll"]),
            binding("finance", "payroll", "admin", "erin"),
        ]
    return docs


def test_a_removed_tenant_is_left_alone_unless_deletion_is_allowed(proj: Project) -> None:
    proj.write_inventory(two_tenants())
    converge(proj)
    payroll_groups = {n for n in proj.aws.groups() if "payroll" in n}
    assert len(payroll_groups) == 3
    proj.write_inventory(two_tenants(with_payroll=False))

    plan = proj.cli("plan", "--detailed-exitcode")
    assert plan.code == 0, plan.out + plan.err
    assert f"{PAYROLL}: not planned: in the state store but no longer in the inventory" in plan.out
    out = converge(proj)
    assert f"{PAYROLL}: not reconciled" in out
    assert payroll_groups <= set(proj.aws.groups())

    preview = proj.cli("plan", "--allow-deletions", "-o", "json")
    (t,) = [t for t in preview.json()["tenants"] if t["tenant"] == PAYROLL]
    assert {c["action"] for c in t["changes"]} == {"revoke", "delete_group"}
    assert all(c["note"].startswith("tenant removed from the inventory") for c in t["changes"])

    converge(proj, "--allow-deletions")
    assert not payroll_groups & set(proj.aws.groups())
    assert proj.aws.assignments(ACCOUNTS["payroll"], proj.ps["admin"]) == []
    with proj.store() as store:
        assert store.tenant_statuses()[PAYROLL] == "Deleted"
    assert len([n for n in proj.aws.groups() if "ledger" in n]) == 3, "the other tenant is untouched"


def test_delete_removed_tenants_deletes_them_but_never_on_an_empty_inventory(proj: Project) -> None:
    proj.write_inventory(two_tenants())
    converge(proj)
    proj.platform_extra = {"deleteRemovedTenants": True}
    proj.write_config()

    proj.write_inventory([])
    r = proj.cli("reconcile", "--all")
    assert "DELETION_GUARD: the inventory is empty" in r.out
    assert r.code == 1, "the guard fails the run, as it does past maxDeletions"
    assert len(proj.aws.groups()) == 6, "an empty source deletes nothing"
    for args in (("plan",), ("plan", "--allow-deletions"), ("reconcile", "--all", "--allow-deletions")):
        r = proj.cli(*args)
        assert r.code == 1, (args, r.out)
        assert "DELETION_GUARD: the inventory is empty" in r.out
    assert len(proj.aws.groups()) == 6, "not even --allow-deletions deletes on an empty inventory"

    proj.write_inventory(two_tenants(with_payroll=False))
    converge(proj)
    assert sorted(proj.aws.groups()) == GROUPS
