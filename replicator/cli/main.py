"""``replicator``: the command line.

Exit codes: 0 fine, 1 error (bad input, a failed tenant, a usage error), 2 changes pending
(``plan --detailed-exitcode``), 3 warnings (``--fail-on-warnings``). A usage error is 1, not
argparse's 2, so that 2 always means "changes pending". Every error is a message on stderr,
never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from replicator.cli import admin, plans, runs
from replicator.cli.common import EXIT_ERROR
from replicator.cli.parser import build_parser

EXIT_PIPE = 141
"""128 + SIGPIPE: what a shell reports for a tool whose reader went away."""

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "validate": admin.cmd_validate,
    "schema": admin.cmd_schema,
    "plan": plans.cmd_plan,
    "apply": plans.cmd_apply,
    "snapshot": plans.cmd_snapshot,
    "reconcile": runs.cmd_reconcile,
    "explain": runs.cmd_explain,
    "run": runs.cmd_run,
    "resync": runs.cmd_resync,
    "status": admin.cmd_status,
    "apikey": admin.cmd_apikey,
    "sync": admin.cmd_sync,
    "completion": admin.cmd_completion,
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (1, see Parser.error)
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    from replicator import logs

    logs.configure(args.log_format, args.log_level)
    handler: Callable[[argparse.Namespace], int] = COMMANDS[args.command]
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
    except BrokenPipeError:
        # stdout closed early (`replicator status | head`): quiet, as other Unix tools are. Python
        # would report the failed flush at exit: stdout goes to /dev/null first.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except Exception as e:  # the last line of defence: a message, never a traceback
        from replicator.engine.results import UnknownTenantError
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
