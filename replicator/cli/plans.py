"""``plan``, ``snapshot`` and ``apply``: dry runs, plan files and snapshots, applying exactly a
reviewed plan."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from replicator.cli.common import (
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_WARNINGS,
    plan_errors,
    reconcile_summary,
    run_engine,
    validated,
)

if TYPE_CHECKING:
    from platforms.contract import Change, Driver, PlatformUser
    from replicator.core.config import PlatformConfig
    from replicator.core.plan import Plan
    from replicator.engine.results import RunReport, TenantResult
    from replicator.inputs.validate import Validated


def cmd_plan(args: argparse.Namespace) -> int:
    from replicator.cli.render import coloured, plans_json, plans_text, users_text
    from replicator.core import planfile

    if args.out is not None and not args.out.parent.is_dir():  # before the platforms are read
        print(f"error: --out {args.out}: folder {args.out.parent} does not exist", file=sys.stderr)
        return EXIT_ERROR
    if args.observed:
        v, report, notes = _plan_offline(args)
    else:
        v, report = run_engine(args, apply=False)
        notes = []
    plans = [r.plan for r in report.results if r.plan is not None]
    errors = plan_errors(report)
    text = (
        plans_json(plans, errors, held=report.held, users=report.users)
        if args.output == "json"
        else coloured(plans_text(plans, errors), sys.stdout)
    )
    sys.stdout.write(text)
    if args.output != "json":
        for key, why in sorted(report.held.items()):
            print(f"{key}: not planned: {why}")
        for line in users_text(report.users, applied=False):
            print(line)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.out:
        section = planfile.artifact_section(
            planfile.input_digests(v.config, v.inventory),
            args.allow_deletions,
            datetime.now(UTC).isoformat(timespec="seconds"),
            {
                r.key: planfile.observed_doc(r.observed, r.owned)
                for r in report.results
                if r.plan is not None and r.observed is not None
            },
        )
        args.out.write_text(plans_json(plans, errors, section, held=report.held), encoding="utf-8")
    if report.failed or report.guarded or report.users_failed:
        return EXIT_ERROR
    if args.fail_on_warnings and report.warnings:
        return EXIT_WARNINGS
    if args.detailed_exitcode and report.pending:
        return EXIT_CHANGES
    return EXIT_OK


def _plan_offline(args: argparse.Namespace) -> tuple[Validated, RunReport, list[str]]:
    """``plan --observed``: the engine over a snapshot instead of the platforms, with the store's
    records taken from the snapshot too (in a throw-away SQLite file), so neither credentials nor
    the state store are needed."""
    import tempfile

    from replicator.core import planfile
    from replicator.engine import artifacts as artifact
    from replicator.engine.results import UnknownTenantError
    from replicator.engine.runner import Engine
    from state import Store

    snap = artifact.read_snapshot(args.observed)
    v = validated(args)
    if args.platform and v.config.platform(args.platform) is None:
        raise UnknownTenantError(f"unknown platform {args.platform!r}")
    drivers: list[artifact.SnapshotDriver] = []

    def make_driver(platform: PlatformConfig) -> Driver:
        ensures = v.capabilities[platform.identifier].ensures_users
        driver = artifact.SnapshotDriver(platform.identifier, snap, ensures)
        drivers.append(driver)
        return driver

    with tempfile.TemporaryDirectory(prefix="replicator-plan-") as tmp:
        store = Store(f"sqlite:///{tmp}/snapshot.db")
        try:
            for key, doc in snap.tenants.items():
                _, owned = planfile.observed_from_doc(doc)
                for o in owned:
                    store.record_group_intent(doc["platform"], key, o.alias, o.name, o.project_role)
                    if o.platform_id is not None:
                        store.confirm_group(doc["platform"], key, o.name, o.platform_id, o.alias)
                    store.set_group_roles(doc["platform"], key, o.name, o.roles)
                    for member in o.members:
                        store.add_group_member(doc["platform"], key, o.name, member)
            engine = Engine(
                v, store, allow_deletions=args.allow_deletions, make_driver=make_driver, change_attempts=1
            )
            now = datetime.now(UTC)
            tenants = engine.select(now, args.tenant, args.platform)
            report = asyncio.run(engine.run(tenants, apply=False, now=now))
        finally:
            store.close()
    unresolved = sorted({e for d in drivers for e in d.unresolved})
    unknown = sorted({t for d in drivers for t in d.unknown_tenants})
    for r in report.results:
        if r.plan is not None and unresolved:
            r.plan = _mark_unresolved(r.plan)
    notes = [f"planned against the snapshot {args.observed} taken {snap.created_at}"]
    if unresolved:
        notes.append(
            f"{len(unresolved)} users are not in the snapshot and are shown as found "
            f"({', '.join(unresolved[:5])}{', ...' if len(unresolved) > 5 else ''}); "
            "they are looked up when the plan is applied"
        )
    if unknown:
        notes.append(f"not in the snapshot, planned as new tenants: {', '.join(unknown)}")
    return v, report, notes


def _mark_unresolved(plan: Plan) -> Plan:
    from dataclasses import replace

    from replicator.engine.artifacts import NOT_IN_SNAPSHOT, UNRESOLVED_PREFIX

    def mark(c: Change) -> Change:
        if c.user is not None and c.user.id.startswith(UNRESOLVED_PREFIX):
            return replace(c, note=NOT_IN_SNAPSHOT)
        return c

    return replace(plan, changes=tuple(mark(c) for c in plan.changes))


def snapshot_target(args: argparse.Namespace) -> str | None:
    """Settle ``--out`` and ``-o`` of ``snapshot``; a usage error as a message, else None.

    ``-o FILE`` is what this command took before ``-o`` meant the output format on every command: a
    value other than ``text`` or ``json`` is still the file, with a warning, while no ``--out`` is
    given. It is to go in a later release."""
    if args.output not in ("text", "json"):
        if args.out is not None:
            return f"-o/--output {args.output!r}: choose text or json (the file is --out)"
        print(
            f"warning: `snapshot -o FILE` is deprecated: write `--out {args.output}`; -o is the output "
            "format (text or json) on every command",
            file=sys.stderr,
        )
        args.out, args.output = Path(args.output), "text"
    if args.out is None:
        return "the file to write is required: --out FILE"
    if not args.out.parent.is_dir():  # before the platforms are read, not after
        return f"--out {args.out}: folder {args.out.parent} does not exist"
    return None


def cmd_snapshot(args: argparse.Namespace) -> int:
    from replicator.core import planfile

    usage = snapshot_target(args)
    if usage is not None:
        print(f"replicator snapshot: error: {usage}", file=sys.stderr)
        return EXIT_ERROR
    args.allow_deletions = False
    v, report = run_engine(args, apply=False)
    failed = [r for r in report.results if r.observed is None]
    for r in failed:
        print(f"error: {r.key}: {r.error}", file=sys.stderr)
    if failed:
        print(f"snapshot not written: {len(failed)} tenants could not be observed", file=sys.stderr)
        return EXIT_ERROR
    tenants: dict[str, dict[str, Any]] = {}
    lookups: dict[str, dict[str, tuple[PlatformUser, ...]]] = {}
    for r in report.results:
        assert r.observed is not None  # the failed ones returned above
        doc = planfile.observed_doc(r.observed, r.owned)
        doc["platform"] = r.platform
        doc["localId"] = r.plan.tenant.ref.local_id if r.plan else ""
        tenants[r.key] = doc
        if r.plan is not None:
            lookups.setdefault(r.platform, {}).update(r.plan.resolved)
    # Every inventory user, bound or not, so that a pull request binding an existing user plans
    # offline exactly as it would live.
    try:
        asyncio.run(_lookup_everyone(v, lookups))
    except Exception as e:
        print(f"error: snapshot not written: user lookup failed: {e}", file=sys.stderr)
        return EXIT_ERROR
    doc = planfile.snapshot_doc(datetime.now(UTC).isoformat(timespec="seconds"), tenants, lookups)
    args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if args.output == "json":
        print(json.dumps({"file": str(args.out), "tenants": sorted(tenants)}, indent=2))
    else:
        print(f"snapshot of {len(tenants)} tenants written to {args.out}")
    return EXIT_OK


async def _lookup_everyone(v: Validated, lookups: dict[str, dict[str, tuple[PlatformUser, ...]]]) -> None:
    """Add to ``lookups`` (platform -> transformed euid -> users) every inventory user with an
    euid, on every platform ``lookups`` names, in one batched driver lookup per platform."""
    from replicator.core.euid import transform_euid
    from replicator.engine.runner import default_driver

    euids = sorted({u.spec.euid for u in v.inventory.users.values() if u.spec.euid})
    for platform_id, known in lookups.items():
        platform = v.config.platform(platform_id)
        assert platform is not None  # lookups holds the platforms of tenants just planned
        wanted = sorted({transform_euid(platform.euid_pattern, e) for e in euids} - known.keys())
        if not wanted:
            continue
        driver = default_driver(platform)
        try:
            known.update(await driver.lookup_users(wanted))
        finally:
            await driver.close()


def cmd_apply(args: argparse.Namespace) -> int:
    """Apply a plan file: refuse (nothing applied anywhere) when the inputs or the observed state
    of any of its tenants changed since, else apply exactly its changes. The check runs twice: over
    every tenant before anything is applied, and again for each tenant right before its changes."""
    from replicator.cli.render import change_json
    from replicator.core import planfile
    from replicator.engine import artifacts as artifact

    saved = artifact.read_plan_artifact(args.plan_file)
    v = validated(args)
    changed = planfile.diff_inputs(saved.inputs, planfile.input_digests(v.config, v.inventory))
    if changed:
        print(
            f"error: {args.plan_file}: the config or inventory changed since the plan was made "
            f"({saved.created_at}); make a new plan:",
            file=sys.stderr,
        )
        for line in planfile.summarise(changed):
            print(f"  {line}", file=sys.stderr)
        return EXIT_ERROR
    for key, error in saved.errors:
        print(f"note: {key} is not in the plan file (it failed when planned: {error})", file=sys.stderr)
    by_key = {t.key: t for t in saved.tenants}

    def check(result: TenantResult) -> str | None:
        t = by_key[result.key]
        assert result.plan is not None
        assert result.observed is not None
        reasons: list[str] = []
        if result.plan.fingerprint != t.fingerprint:
            now_doc = planfile.observed_doc(result.observed, result.owned)
            reasons = planfile.diff_observed(t.observed, now_doc) or ["the observed state changed"]
        else:
            for kind, recorded, current in (
                ("changes", t.changes, result.plan.changes),
                ("withheld", t.withheld, result.plan.withheld),
            ):
                now_docs = [change_json(c) for c in current]
                if list(recorded) != now_docs:
                    reasons += planfile.diff_changes(recorded, now_docs) or [f"the {kind} are reordered"]
        if not reasons:
            return None
        return "the plan is stale: " + "; ".join(planfile.summarise(reasons))

    args.tenant, args.platform = list(by_key), None
    args.allow_deletions = saved.allow_deletions
    if not by_key:
        print("the plan file has no tenants: nothing to apply")
        return EXIT_OK
    _, checked = run_engine(args, apply=False, v=v, check=check)
    stale = [r for r in checked.results if r.error and r.error_kind != "guard"]
    if stale:
        print(f"error: {args.plan_file}: refused, nothing was applied:", file=sys.stderr)
        for r in stale:
            print(f"  {r.key}: {r.error}", file=sys.stderr)
        return EXIT_ERROR
    _, report = run_engine(args, apply=True, v=v, check=check)
    return reconcile_summary(args, report)
