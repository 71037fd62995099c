"""``reconcile``, ``explain``, ``run`` (the daemon) and ``resync`` (asks a running daemon)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from replicator.cli.common import EXIT_ERROR, EXIT_OK, open_store, reconcile_summary, run_engine, validated

if TYPE_CHECKING:
    from replicator.core.config import PlatformConfig
    from state import CreatedUserRecord


def cmd_reconcile(args: argparse.Namespace) -> int:
    from replicator.cli.render import coloured, plans_text

    if not args.tenant and not args.all:
        print(
            "error: name the tenants (--tenant WS/PROJECT/PLATFORM, repeatable) or pass --all",
            file=sys.stderr,
        )
        return EXIT_ERROR
    if args.tenant and args.all:
        print("error: --tenant and --all exclude each other", file=sys.stderr)
        return EXIT_ERROR
    _, report = run_engine(args, apply=not args.dry_run, wait_pending=args.wait_pending)
    plans = [r.plan for r in report.results if r.plan is not None]
    if args.dry_run and args.output != "json":  # (JSON: `plan -o json` prints the plans)
        sys.stdout.write(coloured(plans_text(plans), sys.stdout))
    return reconcile_summary(args, report)


def cmd_explain(args: argparse.Namespace) -> int:
    """Plans the one tenant (read-only, like `plan`) and follows the user through it."""
    from replicator.core.explain import explain_group, explain_text, explain_user, find_user, group_text
    from replicator.engine.results import UnknownTenantError
    from replicator.engine.runner import Engine

    v = validated(args)
    tenant = v.inventory.tenants.get(args.tenant)
    if tenant is None:
        raise UnknownTenantError(f"unknown tenant {args.tenant!r} (write WORKSPACE/PROJECT/PLATFORM)")
    user = find_user(v.inventory, args.user) if args.user else None
    if args.user and user is None:
        print(f"error: no meshUser named {args.user!r} (by name, username, email or euid)", file=sys.stderr)
        return EXIT_ERROR
    store = open_store(v, args.config)
    try:
        engine = Engine(v, store)
        now = datetime.now(UTC)
        report = asyncio.run(engine.run(engine.select(now, [args.tenant]), apply=False, now=now))
        created = store.created_users(tenant.metadata.platform_identifier)
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
        platform = v.config.platform(tenant.metadata.platform_identifier)
        record = next((c for c in created if c.euid == doc.get("platformEuid")), None)
        if record is not None and platform is not None:
            text += created_note(doc, record, platform)
    else:
        found = explain_group(result.plan, result.observed, args.group)
        if found is None:
            print(f"error: {args.group!r} is neither desired nor owned on {args.tenant}", file=sys.stderr)
            return EXIT_ERROR
        doc, text = found, group_text(found)
    sys.stdout.write(json.dumps(doc, indent=2) + "\n" if args.output == "json" else text)
    return EXIT_OK


def created_note(doc: dict[str, Any], record: CreatedUserRecord, platform: PlatformConfig) -> str:
    """For explain: the user is one the replicator created on the platform (``createdUser`` in
    ``doc``), and when deprovisioning deletes it if no binding needs it by then."""
    option = platform.deprovision_created_users
    since = record.unneeded_since
    after = since + timedelta(seconds=option.grace_period) if since and option.enabled else None
    doc["createdUser"] = {
        "id": record.user_id,
        "createdAt": record.created_at.isoformat(),
        "unneededSince": since.isoformat() if since else None,
        "deleteAfter": after.isoformat() if after else None,
    }
    line = f"  created by the replicator on {record.created_at:%Y-%m-%d} (id {record.user_id})"
    if since is not None and after is not None:
        line += f"; no binding needs it since {since:%Y-%m-%d}, deleted after {after:%Y-%m-%d %H:%M} UTC"
    return line + "\n"


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
        replica_id=args.replica_id or f"{socket.gethostname()}-{os.getpid()}",
        listen=(host, int(port)),
        workers=max(1, args.workers),
        grace=args.grace,
        store_outage=args.store_outage,
        freeze_heap=True,
    )
    from replicator.service.daemon import DaemonError

    try:
        asyncio.run(daemon.run_until_signalled())
    except DaemonError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_resync(args: argparse.Namespace) -> int:
    """Asks a running daemon for a full resync now (``POST /v1/reconcile``), with the API key in
    ``REPLICATOR_API_KEY`` (never on the command line, where other users of the host could read it)."""
    import os
    import urllib.error
    import urllib.parse
    import urllib.request

    url = args.url.rstrip("/") + "/v1/reconcile"
    if args.platform:
        url += "?" + urllib.parse.urlencode({"platform": args.platform})
    key = os.environ.get("REPLICATOR_API_KEY", "")
    if not key:
        print("error: set REPLICATOR_API_KEY to an API key with the write scope", file=sys.stderr)
        return EXIT_ERROR
    request = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as answer:
            doc = json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            why = json.loads(body).get("error", "") if body else ""
        except ValueError:
            why = body[:200].decode(errors="replace")
        print(f"error: the daemon at {args.url} answered {e.code}: {why or e.reason}", file=sys.stderr)
        return EXIT_ERROR
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        print(f"error: cannot reach the daemon at {args.url}: {reason}", file=sys.stderr)
        return EXIT_ERROR
    if args.output == "json":
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    merged = doc.get("mergedInto", {})
    scope = f" of platform {args.platform}" if args.platform else ""
    print(
        f"full resync{scope} queued: {doc.get('queued', 0)} tenants queued, "
        + ", ".join(f"{n} {how}" for how, n in sorted(merged.items()))
        + (" (already queued, running or in backoff)" if merged else "0 already waiting")
    )
    return EXIT_OK
