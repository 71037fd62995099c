"""What the commands share: exit codes, loading and validating, the store, one engine run, the
reconcile summary, a progress bar."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.progress import Progress, TaskID

    from replicator.core.model import DesiredTenant
    from replicator.engine.leases import TenantLeases
    from replicator.engine.results import RunReport, TenantResult
    from replicator.engine.runner import Engine
    from replicator.inputs.loader import Loaded
    from replicator.inputs.validate import Validated
    from state import Store

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_WARNINGS = 0, 1, 2, 3
"""0 fine, 1 error (bad input, a failed tenant, a usage error), 2 changes pending
(``plan --detailed-exitcode``), 3 warnings (``--fail-on-warnings``)."""


def validated(args: argparse.Namespace) -> Validated:
    from replicator.inputs.loader import load
    from replicator.inputs.validate import validate

    v = validate(load(args.config))
    if v.inventory.empty:
        entries = ", ".join(v.config.inventory) or "none: the config's `inventory` is empty"
        print(
            f"warning: the inventory is empty: no users, bindings or tenants were read (inventory: "
            f"{entries}); nothing will be planned or reconciled",
            file=sys.stderr,
        )
    return v


def open_store(v: Validated | Loaded, config_path: Path | None) -> Store:

    from replicator.inputs.loader import default_config_path, open_state

    return open_state(v.config, config_path or default_config_path())


def run_engine(
    args: argparse.Namespace,
    apply: bool,
    v: Validated | None = None,
    *,
    wait_pending: float = 0.0,
    **engine_options: Any,
) -> tuple[Validated, RunReport]:
    """One engine run of the tenants ``args`` chose. With ``wait_pending`` seconds, tenants the
    platform had not caught up with (requeued) run again after their delay, as the daemon would
    run them, until they are done or the time is up."""
    from replicator.engine.runner import Engine

    v = v or validated(args)
    if args.platform and v.config.platform(args.platform) is None:
        from replicator.engine.results import UnknownTenantError

        raise UnknownTenantError(f"unknown platform {args.platform!r}")
    store = open_store(v, args.config)
    try:
        if apply:  # the daemon's tenant leases: never change a tenant another run is changing
            engine_options["leases"] = command_leases(store, v)
        engine = Engine(v, store, allow_deletions=args.allow_deletions, **engine_options)
        now = datetime.now(UTC)
        tenants = engine.select(now, args.tenant, args.platform)
        label = args.command if apply or args.command != "apply" else "checking the plan"
        with ProgressBar(len(tenants), label) as tick:
            report = asyncio.run(engine.run(tenants, apply=apply, now=now, on_done=tick))
        if apply and wait_pending > 0 and report.requeued:
            report = asyncio.run(requeue_pending(engine, tenants, report, wait_pending))
        report.held = engine.held_removed
    finally:
        store.close()
    return v, report


def command_leases(store: Store, v: Validated) -> TenantLeases:
    """The tenant leases of this command: the daemon's, held by ``<command>@<host>:<pid>``."""
    import os
    import socket
    from datetime import timedelta

    from replicator.engine.leases import TenantLeases

    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "replicator"
    command = next((a for a in sys.argv[1:] if a in ("reconcile", "apply")), name)
    holder = f"{command}@{socket.gethostname()}:{os.getpid()}"
    return TenantLeases(store, holder, timedelta(seconds=v.config.schedule.lease_ttl))


async def requeue_pending(
    engine: Engine, tenants: Sequence[DesiredTenant], report: RunReport, budget: float
) -> RunReport:
    """Run the requeued tenants again after their delay while ``budget`` seconds last; each result
    replaces the earlier one, with the changes applied before counted in."""
    import time

    by_key = {d.ref.key: d for d in tenants}
    deadline = time.monotonic() + budget
    results = {r.key: r for r in report.results}
    while pending := [r for r in results.values() if r.requeued]:
        delay = min(r.requeue_after for r in pending)
        if time.monotonic() + delay > deadline:
            break
        print(
            f"waiting {delay:g} s for the platform to catch up with {len(pending)} tenants", file=sys.stderr
        )
        await asyncio.sleep(delay)
        again = await engine.run([by_key[r.key] for r in pending], apply=True, now=datetime.now(UTC))
        for r in again.results:
            r.applied += results[r.key].applied
            results[r.key] = r
    report.results = sorted(results.values(), key=lambda r: r.key)
    return report


def plan_errors(report: RunReport) -> list[tuple[str, str]]:
    """Tenants a plan could not be computed for (a guard's refusal is part of the plan)."""
    errors = [
        (r.key, r.error) for r in report.results if r.error and (r.plan is None or r.error_kind != "guard")
    ]
    errors += [(r.key, f"pending on the platform: {r.pending}") for r in report.requeued]
    return sorted(errors)


def reconcile_doc(args: argparse.Namespace, report: RunReport) -> dict[str, object]:
    """``reconcile -o json`` and ``apply -o json``: every tenant with its outcome (``converged``,
    ``changes-planned`` in a dry run, ``pending``, ``failed``, ``held``) and the totals."""
    dry = bool(getattr(args, "dry_run", False))
    tenants: list[dict[str, object]] = [
        {"tenant": key, "outcome": "held", "error": why} for key, why in sorted(report.held.items())
    ]
    for r in report.results:
        planned = len(r.plan.changes) if r.plan else 0
        outcome = (
            "pending"
            if r.requeued
            else "failed"
            if not r.ok
            else "changes-planned"
            if dry and planned
            else "converged"
        )
        tenants.append(
            {
                "tenant": r.key,
                "outcome": outcome,
                "changesApplied": r.applied,
                "changesPlanned": planned if dry else None,
                "withheld": len(r.plan.withheld) if r.plan else 0,
                "warnings": [{"code": w.code.value, "message": w.message} for w in r.warnings],
                "error": r.error,
                "errorKind": r.error_kind,
            }
        )
    return {
        "dryRun": dry,
        "tenants": tenants,
        "failed": len(report.failed),
        "pending": len(report.requeued),
        "changesApplied": sum(r.applied for r in report.results),
        "warnings": report.warnings,
    }


def reconcile_summary(args: argparse.Namespace, report: RunReport) -> int:
    if getattr(args, "output", "text") == "json":
        print(json.dumps(reconcile_doc(args, report), indent=2))
        return _exit_code(args, report)
    for key, why in sorted(report.held.items()):
        print(f"{key}: not reconciled: {why}")
    for r in report.results:
        if r.requeued:
            print(
                f"{r.key}: PENDING (platform): {r.applied} changes applied; the platform has not caught "
                f"up yet: {r.pending} (the next run goes on after {r.requeue_after:g} s)"
            )
        elif r.ok and getattr(args, "dry_run", False):
            w = len(r.plan.warnings) if r.plan else 0
            n = len(r.plan.changes) if r.plan else 0
            state = f"would apply {n} changes" if n else "converged"
            print(f"{r.key}: {state} (dry run, nothing applied), {w} warnings")
        elif r.ok:
            w = len(r.plan.warnings) if r.plan else 0
            print(f"{r.key}: converged, {r.applied} changes applied, {w} warnings")
        else:
            print(f"{r.key}: FAILED ({r.error_kind}): {r.error}")
            if r.error_kind == "guard":
                print(
                    f"  {len(r.plan.withheld) if r.plan else 0} removals withheld; "
                    "rerun with --allow-deletions to confirm them"
                )
    for r in report.results:
        for warning in r.warnings:
            print(f"  {r.key}: {warning.code.value}: {warning.message}")
    from replicator.cli.render import users_text

    for line in users_text(report.users, applied=not getattr(args, "dry_run", False)):
        print(line)
    ok = len(report.results) - len(report.failed) - len(report.requeued)
    pending = f", {len(report.requeued)} pending on the platform" if report.requeued else ""
    if getattr(args, "dry_run", False):
        planned = sum(len(r.plan.changes) for r in report.results if r.plan is not None)
        print(
            f"Dry run: planned {ok} of {len(report.results)} tenants, {planned} changes would be "
            f"applied, none was; {report.warnings} warnings."
        )
    else:
        print(
            f"Reconciled {ok} of {len(report.results)} tenants{pending}, "
            f"{sum(r.applied for r in report.results)} changes applied, {report.warnings} warnings."
        )
    return _exit_code(args, report)


def _exit_code(args: argparse.Namespace, report: RunReport) -> int:
    if report.failed or report.requeued or report.guarded or report.users_failed:
        return EXIT_ERROR
    if args.fail_on_warnings and report.warnings:
        return EXIT_WARNINGS
    return EXIT_OK


class ProgressBar:
    """A progress bar on stderr, when it is a terminal, for a run still going after ``DELAY``
    seconds: quick runs print nothing extra, and the bar is erased when the run ends. It counts
    tenants done; the bar appears on its own, between two tenants too (a timer thread starts it)."""

    DELAY = 2.0

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        import threading

        self.total, self.label = total, label
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.closed = False
        self.lock = threading.Lock()
        self.timer: threading.Timer | None = None
        self.bar: Progress | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> Callable[[TenantResult], None]:
        import threading

        if self.total > 0 and self.stream.isatty():
            self.timer = threading.Timer(self.DELAY, self._show)
            self.timer.daemon = True
            self.timer.start()
        return self._tick

    def _show(self) -> None:
        from rich.console import Console
        from rich.progress import Progress

        with self.lock:
            if self.closed:
                return
            self.bar = Progress(console=Console(file=self.stream), transient=True)
            self.task = self.bar.add_task(self.label, total=self.total, completed=self.done)
            self.bar.start()

    def _tick(self, _result: TenantResult) -> None:
        with self.lock:
            self.done += 1
            if self.bar is not None and self.task is not None:
                self.bar.update(self.task, completed=self.done)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.closed = True
            if self.timer is not None:
                self.timer.cancel()
            if self.bar is not None:
                self.bar.stop()
