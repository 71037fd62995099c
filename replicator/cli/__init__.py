"""``replicator``: the command line (CONTRACT section 1).

Exit codes: 0 fine, 1 error (bad input, a failed tenant, a usage error), 2 changes pending
(``plan --detailed-exitcode``), 3 warnings (``--fail-on-warnings``). A usage error is 1, not
argparse's 2, so that 2 always means "changes pending".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_WARNINGS = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _common(p: argparse.ArgumentParser, suppress: bool) -> None:
    d: Any = argparse.SUPPRESS if suppress else None
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        default=d,
        help="config file (default ./replicator.yaml or $REPLICATOR_CONFIG)",
    )
    p.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default=argparse.SUPPRESS if suppress else "auto",
        help="log lines as JSON or for people (default: JSON unless stderr is a terminal)",
    )
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=argparse.SUPPRESS if suppress else "info",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="replicator",
        description="Keeps groups, memberships and role bindings on cloud "
        "platforms exactly as the organisation's projects, bindings and landing zones say.",
    )
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        _common(p, suppress=True)
        return p

    cmd("validate", "check config and inventory; print every problem with file, object and field")
    cmd("schema", "print the JSON Schema of the config and of the inventory objects")

    p = cmd("plan", "dry run: print the changes a reconcile would make, and the warnings")
    _selection(p)
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    p.add_argument(
        "--out", type=Path, metavar="FILE", help="also write a plan file (JSON) that `replicator apply` takes"
    )
    p.add_argument(
        "--observed",
        type=Path,
        metavar="SNAPSHOT",
        help="plan against a snapshot (`replicator snapshot`) instead of the platforms: no credentials",
    )
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 2 when changes are pending")
    p.add_argument("--fail-on-warnings", action="store_true", help="exit 3 when there are warnings")
    p.add_argument("--allow-deletions", action="store_true", help="plan past the deletion guard")

    p = cmd("apply", "apply a plan file written by `plan --out`, exactly, or refuse when it is stale")
    p.add_argument("plan_file", type=Path, metavar="PLAN_FILE")
    p.add_argument("--fail-on-warnings", action="store_true", help="exit 3 when converged with warnings")

    p = cmd("snapshot", "record the observed state of the owned objects, for `plan --observed`")
    _selection(p)
    p.add_argument("-o", "--out", type=Path, required=True, metavar="FILE", help="where to write it")

    p = cmd("reconcile", "apply the desired state to the chosen tenants")
    _selection(p)
    p.add_argument("--all", action="store_true", help="every tenant of the inventory")
    p.add_argument("--dry-run", action="store_true", help="compute and print, change nothing")
    p.add_argument(
        "--allow-deletions",
        action="store_true",
        help="confirm removals the deletion guard withheld (maxDeletions, empty desired state)",
    )
    p.add_argument("--fail-on-warnings", action="store_true", help="exit 3 when converged with warnings")

    p = cmd("explain", "why a user has (or lacks) each membership on a tenant, binding by binding")
    p.add_argument("--tenant", required=True, metavar="WS/PROJECT/PLATFORM")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="meshUser name, username, email or euid")
    who.add_argument("--group", help="a group name as rendered on the platform")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")

    p = cmd("run", "the daemon: scheduled and triggered reconciles, health, metrics, API")
    p.add_argument("--listen", default="0.0.0.0:8080", metavar="HOST:PORT")
    p.add_argument("--replica-id", default=None, help="name of this replica (default: the host name)")
    p.add_argument("--workers", type=int, default=4, help="tenants reconciled at once (all platforms)")
    p.add_argument(
        "--grace", type=float, default=30.0, help="seconds in-flight changes get to finish on stop"
    )
    p.add_argument(
        "--store-outage",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="exit 1 when the state store stays unreachable this long (default 300)",
    )

    p = cmd("status", "last run per tenant from the state store, with open warnings")
    p.add_argument("--tenant", action="append", default=[], metavar="WS/PROJECT/PLATFORM")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")

    p = cmd("apikey", "API keys of the daemon kept in the state store (only their SHA-256 is stored)")
    keys = p.add_subparsers(dest="apikey_command", required=True, parser_class=_Parser, metavar="ACTION")
    k = keys.add_parser("create", help="create a key and print its secret once", description="create a key")
    _common(k, suppress=True)
    k.add_argument("name", metavar="NAME")
    k.add_argument("--scopes", default="read", help="comma-separated: read, write, admin (default read)")
    k = keys.add_parser("list", help="names, scopes, created, last used (never secrets)")
    _common(k, suppress=True)
    k.add_argument("-o", "--output", choices=("text", "json"), default="text")
    k = keys.add_parser("revoke", help="delete a key: it is refused at once")
    _common(k, suppress=True)
    k.add_argument("name", metavar="NAME")

    p = cmd("sync", "sync an identity source into the state store now (the daemon does it on a schedule)")
    sources = p.add_subparsers(dest="sync_source", required=True, parser_class=_Parser, metavar="SOURCE")
    k = sources.add_parser("ldap", help="read the LDAP directories (identity.ldap)", description="sync LDAP")
    _common(k, suppress=True)
    k.add_argument("--connector", metavar="NAME", help="only this connector (default: every one)")
    k.add_argument("-o", "--output", choices=("text", "json"), default="text")
    return parser


def _selection(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tenant",
        action="append",
        default=[],
        metavar="WS/PROJECT/PLATFORM",
        help="only this tenant (repeatable)",
    )
    p.add_argument("--platform", help="only tenants of this platform identifier")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (1, see _Parser.error)
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    from replicator import logs

    logs.configure(args.log_format, args.log_level)
    handler: Callable[[argparse.Namespace], int] = _COMMANDS[args.command]
    from replicator.inputs.loader import InputError

    try:
        return handler(args)
    except InputError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"{len(e.problems)} problem(s) found.", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # the last line of defence: a message, never a traceback
        from replicator.engine.runner import UnknownTenantError
        from state import StoreError

        if isinstance(e, StoreError | UnknownTenantError):
            print(f"error: {e}", file=sys.stderr)
        else:
            logs.get_logger().debug("unexpected error", exc_info=True)
            print(
                f"error: unexpected {type(e).__name__}: {e} (run with --log-level debug for details)",
                file=sys.stderr,
            )
        return EXIT_ERROR


def _validated(args: argparse.Namespace) -> Any:
    from replicator.inputs.loader import load
    from replicator.inputs.validate import validate

    return validate(load(args.config))


def cmd_validate(args: argparse.Namespace) -> int:
    v = _validated(args)
    inv = v.inventory
    print(
        f"valid: {len(v.config.platforms)} platforms, {len(v.config.landing_zones)} landing zones, "
        f"{len(inv.users)} users, {len(inv.groups)} user groups, {len(inv.projects)} projects, "
        f"{len(inv.bindings)} bindings, {len(inv.tenants)} tenants"
    )
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from pydantic import TypeAdapter

    from replicator.core.inventory import MeshObject
    from replicator.inputs.schema import config_json_schema

    doc = {
        "config": config_json_schema(),
        "inventory": TypeAdapter(MeshObject).json_schema(by_alias=True),
    }
    print(json.dumps(doc, indent=2))
    return EXIT_OK


def _open_store(v: Any, config_path: Path | None) -> Any:
    from replicator.inputs.loader import default_config_path, resolve_state_url
    from state import Store

    return Store(resolve_state_url(v.config.state, config_path or default_config_path()))


def _run(
    args: argparse.Namespace, apply: bool, v: Any = None, **engine_options: Any
) -> tuple[Any, Any]:
    from replicator.engine.runner import Engine

    v = v or _validated(args)
    if args.platform and v.config.platform(args.platform) is None:
        from replicator.engine.runner import UnknownTenantError

        raise UnknownTenantError(f"unknown platform {args.platform!r}")
    store = _open_store(v, args.config)
    try:
        engine = Engine(v, store, allow_deletions=args.allow_deletions, **engine_options)
        now = datetime.now(UTC)
        tenants = engine.select(now, args.tenant, args.platform)
        with _progress(len(tenants), "reconcile" if apply else "plan") as tick:
            report = asyncio.run(engine.run(tenants, apply=apply, now=now, on_done=tick))
        report.held = engine.held_removed
    finally:
        store.close()
    return v, report


def _plan_errors(report: Any) -> list[tuple[str, str]]:
    return [
        (r.key, r.error) for r in report.results if r.error and (r.plan is None or r.error_kind != "guard")
    ]


def cmd_plan(args: argparse.Namespace) -> int:
    from replicator.cli.render import plans_json, plans_text
    from replicator.core import planfile

    if args.observed:
        v, report, notes = _plan_offline(args)
    else:
        v, report = _run(args, apply=False)
        notes = []
    plans = [r.plan for r in report.results if r.plan is not None]
    errors = _plan_errors(report)
    text = plans_json(plans, errors, held=report.held) if args.output == "json" else plans_text(plans, errors)
    sys.stdout.write(text)
    if args.output != "json":
        for key, why in sorted(report.held.items()):
            print(f"{key}: not planned: {why}")
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
    if report.failed:
        return EXIT_ERROR
    if args.fail_on_warnings and report.warnings:
        return EXIT_WARNINGS
    if args.detailed_exitcode and report.pending:
        return EXIT_CHANGES
    return EXIT_OK


def _plan_offline(args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    """``plan --observed``: the engine over a snapshot instead of the platforms, with the store's
    records taken from the snapshot too (in a throw-away SQLite file), so neither credentials nor
    the state store are needed."""
    import tempfile

    from replicator.core import planfile
    from replicator.engine import artifacts as artifact
    from replicator.engine.runner import Engine, UnknownTenantError
    from state import Store

    snap = artifact.read_snapshot(args.observed)
    v = _validated(args)
    if args.platform and v.config.platform(args.platform) is None:
        raise UnknownTenantError(f"unknown platform {args.platform!r}")
    drivers: list[artifact.SnapshotDriver] = []

    def make_driver(platform: Any) -> Any:
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
                    store.record_group_intent(doc["platform"], key, o.alias, o.name)
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


def _mark_unresolved(plan: Any) -> Any:
    from dataclasses import replace

    from replicator.engine.artifacts import NOT_IN_SNAPSHOT, UNRESOLVED_PREFIX

    def mark(c: Any) -> Any:
        if c.user is not None and c.user.id.startswith(UNRESOLVED_PREFIX):
            return replace(c, note=NOT_IN_SNAPSHOT)
        return c

    return replace(plan, changes=tuple(mark(c) for c in plan.changes))


def cmd_snapshot(args: argparse.Namespace) -> int:
    from replicator.core import planfile

    args.allow_deletions = False
    v, report = _run(args, apply=False)
    failed = [r for r in report.results if r.observed is None]
    for r in failed:
        print(f"error: {r.key}: {r.error}", file=sys.stderr)
    if failed:
        print(f"snapshot not written: {len(failed)} tenants could not be observed", file=sys.stderr)
        return EXIT_ERROR
    tenants: dict[str, dict[str, Any]] = {}
    lookups: dict[str, dict[str, Any]] = {}
    for r in report.results:
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
    print(f"snapshot of {len(tenants)} tenants written to {args.out}")
    return EXIT_OK


async def _lookup_everyone(v: Any, lookups: dict[str, dict[str, Any]]) -> None:
    """Add to ``lookups`` (platform -> transformed euid -> users) every inventory user with an
    euid, on every platform ``lookups`` names, in one batched driver lookup per platform."""
    from replicator.core.euid import transform_euid
    from replicator.engine.runner import default_driver

    euids = sorted({u.spec.euid for u in v.inventory.users.values() if u.spec.euid})
    for platform_id, known in lookups.items():
        platform = v.config.platform(platform_id)
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
    v = _validated(args)
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

    def check(result: Any) -> str | None:
        t = by_key[result.key]
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
    _, checked = _run(args, apply=False, v=v, check=check)
    stale = [r for r in checked.results if r.error and r.error_kind != "guard"]
    if stale:
        print(f"error: {args.plan_file}: refused, nothing was applied:", file=sys.stderr)
        for r in stale:
            print(f"  {r.key}: {r.error}", file=sys.stderr)
        return EXIT_ERROR
    _, report = _run(args, apply=True, v=v, check=check)
    return _reconcile_summary(args, report)


def cmd_reconcile(args: argparse.Namespace) -> int:
    from replicator.cli.render import plans_text

    if not args.tenant and not args.all:
        print(
            "error: name the tenants (--tenant WS/PROJECT/PLATFORM, repeatable) or pass --all",
            file=sys.stderr,
        )
        return EXIT_ERROR
    if args.tenant and args.all:
        print("error: --tenant and --all exclude each other", file=sys.stderr)
        return EXIT_ERROR
    _, report = _run(args, apply=not args.dry_run)
    plans = [r.plan for r in report.results if r.plan is not None]
    if args.dry_run:
        sys.stdout.write(plans_text(plans))
    return _reconcile_summary(args, report)


def _reconcile_summary(args: argparse.Namespace, report: Any) -> int:
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
        for w in r.plan.warnings if r.plan else ():
            print(f"  {r.key}: {w.code.value}: {w.message}")
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


def cmd_explain(args: argparse.Namespace) -> int:
    """Plans the one tenant (read-only, like `plan`) and follows the user through it."""
    from replicator.core.explain import explain_group, explain_text, explain_user, find_user, group_text
    from replicator.engine.runner import Engine, UnknownTenantError

    v = _validated(args)
    tenant = v.inventory.tenants.get(args.tenant)
    if tenant is None:
        raise UnknownTenantError(f"unknown tenant {args.tenant!r} (write WORKSPACE/PROJECT/PLATFORM)")
    user = find_user(v.inventory, args.user) if args.user else None
    if args.user and user is None:
        print(f"error: no meshUser named {args.user!r} (by name, username, email or euid)", file=sys.stderr)
        return EXIT_ERROR
    store = _open_store(v, args.config)
    try:
        engine = Engine(v, store)
        now = datetime.now(UTC)
        report = asyncio.run(engine.run(engine.select(now, [args.tenant]), apply=False, now=now))
    finally:
        store.close()
    (result,) = report.results
    if result.plan is None or result.observed is None:
        print(f"error: cannot read {args.tenant}: {result.error}", file=sys.stderr)
        return EXIT_ERROR
    caps = v.capabilities[tenant.metadata.platform_identifier]
    if user is not None:
        doc = explain_user(v.config, v.inventory, tenant, caps, result.plan, result.observed, user, now)
        text = explain_text(doc)
    else:
        found = explain_group(result.plan, result.observed, args.group)
        if found is None:
            print(f"error: {args.group!r} is neither desired nor owned on {args.tenant}", file=sys.stderr)
            return EXIT_ERROR
        doc, text = found, group_text(found)
    sys.stdout.write(json.dumps(doc, indent=2) + "\n" if args.output == "json" else text)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    import socket

    from replicator.inputs.loader import default_config_path
    from replicator.service.daemon import Daemon

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print(f"error: --listen {args.listen!r}: write HOST:PORT", file=sys.stderr)
        return EXIT_ERROR
    daemon = Daemon(
        config_path=args.config or default_config_path(),
        replica_id=args.replica_id or socket.gethostname(),
        listen=(host, int(port)),
        workers=max(1, args.workers),
        grace=args.grace,
        store_outage=args.store_outage,
    )
    from replicator.service.daemon import DaemonError

    try:
        asyncio.run(daemon.run_until_signalled())
    except DaemonError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from replicator.inputs.loader import load

    loaded = load(args.config)  # the store URL is all status needs; inventory problems do not matter
    store = _open_store(loaded, args.config)
    try:
        wanted = set(args.tenant)
        runs = [r for r in store.last_runs() if not wanted or r.tenant in wanted]
        warnings = [w for w in store.open_warnings() if not wanted or w.tenant in wanted]
        statuses = store.tenant_statuses()
        syncs = [] if wanted else store.syncs()
    finally:
        store.close()
    if args.output == "json":
        doc = {
            "sources": [s.as_json() for s in syncs],
            "tenants": [
                {
                    "tenant": r.tenant,
                    "platform": r.platform,
                    "status": statuses.get(r.tenant),
                    "lastRun": {
                        "startedAt": r.started_at.isoformat(),
                        "finishedAt": r.finished_at.isoformat() if r.finished_at else None,
                        "outcome": r.outcome,
                        "changesApplied": r.changes_applied,
                        "error": r.error,
                    },
                    "warnings": [
                        {
                            "code": w.code,
                            "subject": w.subject,
                            "message": w.message,
                            "firstSeen": w.first_seen.isoformat(),
                            "lastSeen": w.last_seen.isoformat(),
                        }
                        for w in warnings
                        if w.tenant == r.tenant
                    ],
                }
                for r in runs
            ]
        }
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    for s in syncs:
        when = (s.finished_at or s.started_at).strftime("%Y-%m-%d %H:%M:%S UTC")
        print(
            f"identity source {s.source}  {s.outcome}  {when}  {s.users} users, {s.groups} groups, "
            f"{s.deprovisioned} deprovisioned"
            + (f"  (last complete {s.last_complete_at:%Y-%m-%d %H:%M})" if s.last_complete_at else "")
        )
        if s.error:
            print(f"  error: {s.error}")
    if not runs:
        print("no runs recorded yet")
    for r in runs:
        when = (r.finished_at or r.started_at).strftime("%Y-%m-%d %H:%M:%S UTC")
        status = statuses.get(r.tenant, "")
        print(
            f"{r.tenant}  {r.outcome}  {when}  {r.changes_applied} changes"
            + (f"  [{status}]" if status else "")
        )
        if r.error:
            print(f"  error: {r.error}")
        for w in warnings:
            if w.tenant == r.tenant:
                print(f"  {w.code} {w.subject}: {w.message} (since {w.first_seen:%Y-%m-%d %H:%M})")
    return EXIT_OK


def cmd_apikey(args: argparse.Namespace) -> int:
    import re

    from replicator.inputs.loader import load
    from replicator.sources.apiauth import SCOPES, new_secret

    loaded = load(args.config)  # the store URL is all it needs
    action = args.apikey_command
    if action == "create":
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}", args.name):
            print(f"error: key name {args.name!r}: letters, digits, _ . @ - (at most 64)", file=sys.stderr)
            return EXIT_ERROR
        scopes = sorted({s.strip() for s in args.scopes.split(",") if s.strip()})
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown or not scopes:
            print(
                f"error: --scopes {args.scopes!r}: choose from {', '.join(SCOPES)} (comma-separated)",
                file=sys.stderr,
            )
            return EXIT_ERROR
    store = _open_store(loaded, args.config)
    try:
        if action == "create":
            secret, digest = new_secret()
            store.create_api_key(args.name, digest, scopes)
            print(secret)
            print(
                f"created API key {args.name!r} with scopes {', '.join(scopes)}: the secret above is "
                "shown only this once",
                file=sys.stderr,
            )
            return EXIT_OK
        if action == "revoke":
            if not store.revoke_api_key(args.name):
                print(f"error: no stored API key named {args.name!r}", file=sys.stderr)
                return EXIT_ERROR
            print(f"revoked API key {args.name!r}", file=sys.stderr)
            return EXIT_OK
        records = store.api_keys()
    finally:
        store.close()
    rows = [
        {
            "name": r.name,
            "scopes": list(r.scopes),
            "createdAt": r.created_at.isoformat(),
            "lastUsedAt": r.last_used_at.isoformat() if r.last_used_at else None,
        }
        for r in records
    ]
    if args.output == "json":
        print(json.dumps({"keys": rows}, indent=2))
    elif not rows:
        print("no stored API keys (keys in the config file are not listed)")
    else:
        for row in rows:
            print(
                f"{row['name']}  {','.join(row['scopes'])}  created {row['createdAt']}  "
                f"last used {row['lastUsedAt'] or 'never'}"
            )
    return EXIT_OK


def cmd_sync(args: argparse.Namespace) -> int:
    import os
    import socket

    from replicator.inputs.loader import default_config_path, load
    from replicator.sources import ldap

    config_path = args.config or default_config_path()
    loaded = load(config_path)  # the sync validates the whole inventory it would write
    connectors = loaded.config.identity.ldap
    if args.connector is not None:
        connectors = tuple(c for c in connectors if c.name == args.connector)
        if not connectors:
            names = ", ".join(c.name for c in loaded.config.identity.ldap) or "none"
            print(f"error: no LDAP connector named {args.connector!r} (configured: {names})", file=sys.stderr)
            return EXIT_ERROR
    if not connectors:
        print(f"error: {config_path}: identity.ldap has no connectors", file=sys.stderr)
        return EXIT_ERROR
    store = _open_store(loaded, config_path)
    holder = f"cli:{socket.gethostname()}:{os.getpid()}"
    results: list[Any] = []
    failed = False
    try:
        for connector in connectors:
            result = ldap.sync_with_lease(connector, config_path, store, holder)
            if result is None:
                failed = True
                print(
                    f"error: ldap {connector.name}: another replica is syncing it now (lease "
                    f"{ldap.lease_name(connector)}); try again later",
                    file=sys.stderr,
                )
                continue
            results.append(result)
            failed = failed or not result.ok
            if args.output != "json":
                print(result.summary(), file=sys.stdout if result.ok else sys.stderr)
                for s in result.skipped:
                    print(f"  left out {s.kind} {s.name or '?'} ({s.dn}): {s.reason}")
                if result.deprovisioned:
                    print(f"  deprovisioned: {', '.join(result.deprovisioned)}")
    finally:
        store.close()
    if args.output == "json":
        print(json.dumps({"results": [r.as_json() for r in results]}, indent=2))
        for r in results:
            if not r.ok:
                print(r.summary(), file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_OK


class _progress:
    """A progress bar on a terminal for runs over many tenants; silent otherwise."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> Callable[[Any], None]:
        if self.total > 3 and sys.stderr.isatty():
            try:
                from rich.progress import Progress
            except ImportError:
                return self._plain
            self.bar = Progress(transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total)
        return self._tick

    def _tick(self, _result: Any) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def _plain(self, _result: Any) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "validate": cmd_validate,
    "schema": cmd_schema,
    "plan": cmd_plan,
    "apply": cmd_apply,
    "snapshot": cmd_snapshot,
    "reconcile": cmd_reconcile,
    "explain": cmd_explain,
    "run": cmd_run,
    "status": cmd_status,
    "apikey": cmd_apikey,
    "sync": cmd_sync,
}


if __name__ == "__main__":
    raise SystemExit(main())
