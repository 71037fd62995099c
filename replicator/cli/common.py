"""What the commands share: exit codes, loading and validating, the store, one engine run, the
reconcile summary, a progress bar."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from replicator.engine.results import RunReport, TenantResult
    from replicator.inputs.loader import Loaded
    from replicator.inputs.validate import Validated
    from state import Store

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_WARNINGS = 0, 1, 2, 3
"""0 fine, 1 error (bad input, a failed tenant, a usage error), 2 changes pending
(``plan --detailed-exitcode``), 3 warnings (``--fail-on-warnings``)."""


def validated(args: argparse.Namespace) -> Validated:
    from replicator.inputs.loader import load
    from replicator.inputs.validate import validate

    return validate(load(args.config))


def open_store(v: Validated | Loaded, config_path: Path | None) -> Store:

    from replicator.inputs.loader import default_config_path, resolve_state_url
    from state import Store

    return Store(resolve_state_url(v.config.state, config_path or default_config_path()))


def run_engine(
    args: argparse.Namespace, apply: bool, v: Validated | None = None, **engine_options: Any
) -> tuple[Validated, RunReport]:
    from replicator.engine.runner import Engine

    v = v or validated(args)
    if args.platform and v.config.platform(args.platform) is None:
        from replicator.engine.results import UnknownTenantError

        raise UnknownTenantError(f"unknown platform {args.platform!r}")
    store = open_store(v, args.config)
    try:
        engine = Engine(v, store, allow_deletions=args.allow_deletions, **engine_options)
        now = datetime.now(UTC)
        tenants = engine.select(now, args.tenant, args.platform)
        with ProgressBar(len(tenants), "reconcile" if apply else "plan") as tick:
            report = asyncio.run(engine.run(tenants, apply=apply, now=now, on_done=tick))
        report.held = engine.held_removed
    finally:
        store.close()
    return v, report


def plan_errors(report: RunReport) -> list[tuple[str, str]]:
    return [
        (r.key, r.error) for r in report.results if r.error and (r.plan is None or r.error_kind != "guard")
    ]


def reconcile_summary(args: argparse.Namespace, report: RunReport) -> int:
    for key, why in sorted(report.held.items()):
        print(f"{key}: not reconciled: {why}")
    for r in report.results:
        if r.ok:
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
        for warning in r.plan.warnings if r.plan else ():
            print(f"  {r.key}: {warning.code.value}: {warning.message}")
    ok = len(report.results) - len(report.failed)
    print(
        f"Reconciled {ok} of {len(report.results)} tenants, {sum(r.applied for r in report.results)} changes "
        f"applied, {report.warnings} warnings."
    )
    if report.failed:
        return EXIT_ERROR
    if args.fail_on_warnings and report.warnings:
        return EXIT_WARNINGS
    return EXIT_OK


class ProgressBar:
    """A progress bar on a terminal for runs over many tenants; silent otherwise."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        self.bar: Progress | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> Callable[[TenantResult], None]:
        if self.total > 3 and sys.stderr.isatty():
            try:
                from rich.progress import Progress
            except ImportError:
                return self._plain
            self.bar = Progress(transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total)
        return self._tick

    def _tick(self, _result: TenantResult) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.advance(self.task)

    def _plain(self, _result: TenantResult) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
