"""The command line's arguments: one sub-command per verb, common options on each."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from replicator.cli.common import EXIT_ERROR


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def seconds(text: str) -> float:
    """A number of seconds, 0 or more (argparse turns the ValueError into a usage error)."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError(text)
    return value


def http_url(text: str) -> str:
    """An http:// or https:// address (argparse turns the ValueError into a usage error)."""
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(text)
    return text


def add_common(p: argparse.ArgumentParser, suppress: bool) -> None:
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
        help="log lines (on stderr) as JSON or for people (default: JSON unless stderr is a terminal)",
    )
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=argparse.SUPPRESS if suppress else "info",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="replicator",
        description="Keeps groups, memberships and role bindings on cloud "
        "platforms exactly as the organisation's projects, bindings and landing zones say.",
    )
    add_common(parser, suppress=False)
    from replicator import __version__

    parser.add_argument("--version", action="version", version=f"replicator {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        add_common(p, suppress=True)
        return p

    p = cmd("validate", "check config and inventory; print every problem with file, object and field")
    add_output(p)
    cmd("schema", "print the JSON Schema of the config and of the inventory objects")

    p = cmd("plan", "dry run: print the changes a reconcile would make, and the warnings")
    add_selection(p)
    add_output(p)
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
    add_output(p)

    p = cmd("snapshot", "record the observed state of the owned objects, for `plan --observed`")
    add_selection(p)
    p.add_argument("--out", type=Path, metavar="FILE", help="where to write it (required)")
    # `-o FILE` was this command's file option before -o meant the output format everywhere: a value
    # other than text or json is still taken as the file, with a deprecation warning.
    p.add_argument("-o", "--output", default="text", metavar="{text,json}", help=OUTPUT_HELP)

    p = cmd("reconcile", "apply the desired state to the chosen tenants")
    add_selection(p)
    p.add_argument("--all", action="store_true", help="every tenant of the inventory")
    p.add_argument("--dry-run", action="store_true", help="compute and print, change nothing")
    p.add_argument(
        "--allow-deletions",
        action="store_true",
        help="confirm removals the deletion guard withheld (maxDeletions, empty desired state)",
    )
    p.add_argument("--fail-on-warnings", action="store_true", help="exit 3 when converged with warnings")
    add_output(p)
    p.add_argument(
        "--wait-pending",
        type=seconds,
        default=300.0,
        metavar="SECONDS",
        help="when a platform has not caught up with this run's own writes, run those tenants again "
        "after the delay it needs, for at most this long (0: do not wait; they exit 1 as PENDING)",
    )

    p = cmd("explain", "why a user has (or lacks) each membership on a tenant, binding by binding")
    p.add_argument("--tenant", required=True, metavar="WS/PROJECT/PLATFORM")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="meshUser name, username, email or euid")
    who.add_argument("--group", help="a group name as rendered on the platform")
    add_output(p)

    p = cmd("run", "the daemon: scheduled and triggered reconciles, health, metrics, API")
    p.add_argument("--listen", default="0.0.0.0:8080", metavar="HOST:PORT")
    p.add_argument(
        "--replica-id", default=None, help="name of this replica (default: HOSTNAME-PID, one per process)"
    )
    p.add_argument("--workers", type=int, default=4, help="tenants reconciled at once (all platforms)")
    p.add_argument(
        "--grace", type=float, default=30.0, help="seconds in-flight changes get to finish on stop"
    )
    p.add_argument(
        "--store-outage",
        type=seconds,
        default=300.0,
        metavar="SECONDS",
        help="exit 1 when the state store stays unreachable this long (default 300)",
    )

    p = cmd("resync", "ask a running daemon for a full resync now (POST /v1/reconcile)")
    p.add_argument(
        "--url",
        type=http_url,
        default=os.environ.get("REPLICATOR_URL", "http://127.0.0.1:8080"),
        help="the daemon's address (default: $REPLICATOR_URL or http://127.0.0.1:8080); the API key "
        "with the write scope is read from $REPLICATOR_API_KEY",
    )
    p.add_argument("--platform", help="only the tenants of this platform identifier")
    p.add_argument("--timeout", type=seconds, default=30.0, metavar="SECONDS")
    add_output(p)

    p = cmd("status", "last run per tenant from the state store, with open warnings")
    p.add_argument("--tenant", action="append", default=[], metavar="WS/PROJECT/PLATFORM")
    add_output(p)

    p = cmd("apikey", "API keys of the daemon kept in the state store (only their SHA-256 is stored)")
    keys = p.add_subparsers(dest="apikey_command", required=True, parser_class=Parser, metavar="ACTION")
    k = keys.add_parser("create", help="create a key and print its secret once", description="create a key")
    add_common(k, suppress=True)
    k.add_argument("name", metavar="NAME")
    k.add_argument("--scopes", default="read", help="comma-separated: read, write, admin (default read)")
    add_output(k)
    k = keys.add_parser("list", help="names, scopes, created, last used (never secrets)")
    add_common(k, suppress=True)
    add_output(k)
    k = keys.add_parser("revoke", help="delete a key: it is refused at once")
    add_common(k, suppress=True)
    k.add_argument("name", metavar="NAME")
    add_output(k)

    p = cmd("sync", "sync an identity source into the state store now (the daemon does it on a schedule)")
    sources = p.add_subparsers(dest="sync_source", required=True, parser_class=Parser, metavar="SOURCE")
    k = sources.add_parser("ldap", help="read the LDAP directories (identity.ldap)", description="sync LDAP")
    add_common(k, suppress=True)
    k.add_argument("--connector", metavar="NAME", help="only this connector (default: every one)")
    add_output(k)

    p = cmd(
        "completion",
        "print the shell completion script: `source <(replicator completion bash)`, or see docs/cli.md",
    )
    p.add_argument("shell", choices=SHELLS, metavar="SHELL", help=f"one of {', '.join(SHELLS)}")
    return parser


SHELLS = ("bash", "zsh", "tcsh", "fish", "powershell")
"""The shells shtab writes completion scripts for."""


OUTPUT_HELP = "output format: text for people (default) or json, one documented shape per command"


def add_output(p: argparse.ArgumentParser) -> None:
    """``-o/--output``: the output format, the same option on every command that prints a result
    (files a command writes have their own option, ``--out``)."""
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help=OUTPUT_HELP)


def add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tenant",
        action="append",
        default=[],
        metavar="WS/PROJECT/PLATFORM",
        help="only this tenant (repeatable)",
    )
    p.add_argument("--platform", help="only tenants of this platform identifier")
