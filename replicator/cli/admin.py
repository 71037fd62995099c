"""``validate``, ``schema``, ``status``, ``apikey`` and ``sync``: checking inputs and looking after
the state store."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from replicator.cli.common import EXIT_ERROR, EXIT_OK, open_store, validated


def cmd_validate(args: argparse.Namespace) -> int:
    from replicator.inputs.loader import InputError

    if args.output != "json":
        v = validated(args)
    else:
        try:
            v = validated(args)
        except InputError as e:
            problems = [
                {"file": p.file, "line": p.line, "object": p.obj, "field": p.field, "message": p.message}
                for p in e.problems
            ]
            print(json.dumps({"valid": False, "problems": problems}, indent=2))
            return EXIT_ERROR
    inv = v.inventory
    counts = {
        "platforms": len(v.config.platforms),
        "landingZones": len(v.config.landing_zones),
        "users": len(inv.users),
        "userGroups": len(inv.groups),
        "projects": len(inv.projects),
        "bindings": len(inv.bindings),
        "tenants": len(inv.tenants),
    }
    if args.output == "json":
        print(json.dumps({"valid": True, "problems": [], "counts": counts}, indent=2))
        return EXIT_OK
    print(
        f"valid: {counts['platforms']} platforms, {counts['landingZones']} landing zones, "
        f"{counts['users']} users, {counts['userGroups']} user groups, {counts['projects']} projects, "
        f"{counts['bindings']} bindings, {counts['tenants']} tenants"
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


def cmd_status(args: argparse.Namespace) -> int:
    from replicator.core.inventory import MeshTenant
    from replicator.inputs.loader import load

    loaded = load(args.config)  # the store URL is all status needs; inventory problems do not matter
    store = open_store(loaded, args.config)
    try:
        wanted = set(args.tenant)
        runs = [r for r in store.last_runs() if not wanted or r.tenant in wanted]
        warnings = [w for w in store.open_warnings() if not wanted or w.tenant in wanted]
        statuses = store.tenant_statuses()
        syncs = [] if wanted else store.syncs()
        known = {t.key for t in store.known_tenants()} if wanted else set()
    finally:
        store.close()
    known |= {r.tenant for r in runs} | {
        lo.obj.key for lo in loaded.objects if isinstance(lo.obj, MeshTenant)
    }
    unknown = sorted(wanted - known)
    if unknown:
        for key in unknown:
            print(
                f"error: unknown tenant {key!r}: not in the inventory and never run "
                "(write WORKSPACE/PROJECT/PLATFORM)",
                file=sys.stderr,
            )
        return EXIT_ERROR
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
            ],
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
    store = open_store(loaded, args.config)
    try:
        if action == "create":
            secret, digest = new_secret()
            store.create_api_key(args.name, digest, scopes)
            if args.output == "json":
                print(json.dumps({"name": args.name, "scopes": scopes, "secret": secret}, indent=2))
            else:
                print(secret)
            print(
                f"created API key {args.name!r} with scopes {', '.join(scopes)}: the secret above is "
                "shown only this once",
                file=sys.stderr,
            )
            return EXIT_OK
        if action == "revoke":
            if not store.revoke_api_key(args.name):
                in_config = any(k.name == args.name for k in loaded.config.api.keys)
                where = ": it is in the config file (api.keys); remove it there" if in_config else ""
                print(f"error: no stored API key named {args.name!r}{where}", file=sys.stderr)
                return EXIT_ERROR
            if args.output == "json":
                print(json.dumps({"name": args.name, "revoked": True}, indent=2))
            print(f"revoked API key {args.name!r}", file=sys.stderr)
            return EXIT_OK
        records = store.api_keys()
    finally:
        store.close()
    rows: list[dict[str, Any]] = [
        {
            "name": r.name,
            "source": "store",
            "scopes": list(r.scopes),
            "createdAt": r.created_at.isoformat(),
            "lastUsedAt": r.last_used_at.isoformat() if r.last_used_at else None,
        }
        for r in records
    ]
    for key in loaded.config.api.keys:
        ref = key.secret
        try:
            ref.resolve()
            readable = True
        except ValueError:
            readable = False
        rows.append(
            {
                "name": key.name,
                "source": "config",
                "scopes": list(key.scopes),
                "secretFrom": f"env {ref.env}" if ref.env else f"file {ref.file}",
                "secretReadable": readable,
            }
        )
    if args.output == "json":
        print(json.dumps({"keys": rows}, indent=2))
    elif not rows:
        print("no API keys (none stored, none in the config file)")
    else:
        for row in rows:
            if row["source"] == "store":
                print(
                    f"{row['name']}  {','.join(row['scopes'])}  stored, created {row['createdAt']}  "
                    f"last used {row['lastUsedAt'] or 'never'}"
                )
            else:
                unreadable = "" if row["secretReadable"] else " (cannot be read here)"
                joined = ",".join(row["scopes"])
                print(f"{row['name']}  {joined}  config, secret from {row['secretFrom']}{unreadable}")
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
    store = open_store(loaded, config_path)
    holder = f"cli:{socket.gethostname()}:{os.getpid()}"
    results: list[ldap.SyncResult] = []
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


def cmd_completion(args: argparse.Namespace) -> int:
    """The completion script of ``args.shell`` for every command and option, from the parser itself
    (shtab): the commands, their options and choices; files where an option takes a path."""
    import shtab

    from replicator.cli.parser import build_parser

    parser = build_parser()
    for sub in walk_parsers(parser):
        for action in sub._actions:
            if action.type is Path:
                action.complete = shtab.FILE  # type: ignore[attr-defined]
    print(shtab.complete(parser, shell=args.shell), end="")
    return EXIT_OK


def walk_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every sub-command's parser under it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += walk_parsers(sub)
    return found
