"""The command line's options, read from the parser itself: one meaning per option letter on
every command."""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from replicator.cli.parser import build_parser


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
    tuple[tuple[str, ...], argparse.ArgumentParser]
]:
    """Every command and sub-command with its parser, e.g. ``("apikey", "create")``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from commands(sub, (*path, name))


def option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def test_o_is_the_output_format_on_every_command_that_has_it() -> None:
    seen = []
    for path, parser in commands(build_parser()):
        o = option(parser, "-o")
        if o is None:
            continue
        seen.append(" ".join(path))
        assert o.option_strings == ["-o", "--output"], path
        assert o.default == "text", path
        if path != ("snapshot",):  # takes a former `-o FILE` with a deprecation warning, see below
            assert o.choices == ("text", "json"), path
        out = option(parser, "--out")
        assert out is None or "-o" not in out.option_strings, path
    # Every command that prints a result for a script to read.
    assert set(seen) >= {
        "validate", "plan", "apply", "snapshot", "reconcile", "explain", "resync", "status",
        "apikey create", "apikey list", "apikey revoke", "sync ldap",
    }  # fmt: skip


def test_snapshot_takes_a_former_o_file_and_refuses_an_unknown_format_with_out() -> None:
    from replicator.cli.plans import snapshot_target

    args = build_parser().parse_args(["snapshot", "-o", "snap.json"])
    assert snapshot_target(args) is None
    assert (args.out, args.output) == (Path("snap.json"), "text")

    args = build_parser().parse_args(["snapshot", "--out", "snap.json", "-o", "json"])
    assert snapshot_target(args) is None
    assert (args.out, args.output) == (Path("snap.json"), "json")

    args = build_parser().parse_args(["snapshot", "--out", "snap.json", "-o", "yaml"])
    assert snapshot_target(args) == "-o/--output 'yaml': choose text or json (the file is --out)"


class Terminal(io.StringIO):
    """What a terminal shows, for rich: a stream that says it is a tty."""

    def isatty(self) -> bool:
        return True


def test_the_progress_bar_shows_only_for_a_run_still_going_after_its_delay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from replicator.cli.common import ProgressBar

    monkeypatch.setattr(ProgressBar, "DELAY", 0.05)
    quick = Terminal()
    with ProgressBar(5, "plan", quick) as tick:
        for _ in range(5):
            tick(None)  # type: ignore[arg-type]
    assert quick.getvalue() == "", "a run done before the delay prints nothing"

    slow = Terminal()
    bar = ProgressBar(5, "reconcile", slow)
    with bar as tick:
        tick(None)  # type: ignore[arg-type]
        deadline = time.monotonic() + 5
        while bar.bar is None and time.monotonic() < deadline:  # no tick needed to show it
            time.sleep(0.01)
        assert bar.bar is not None
        assert bar.bar.tasks[0].completed == 1
        tick(None)  # type: ignore[arg-type]
        assert bar.bar.tasks[0].completed == 2
    assert "reconcile" in slow.getvalue()
    assert bar.bar.live.transient, "the bar is erased when the run ends"

    piped = io.StringIO()
    with ProgressBar(5, "plan", piped) as tick:
        time.sleep(0.1)
    assert piped.getvalue() == "", "no bar when stderr is not a terminal"


COMPLETE = """
source <("$REPLICATOR" -m replicator completion bash)
comp() {
  COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
  COMPREPLY=(); _shtab_replicator; printf '%s ' "${COMPREPLY[@]}"; echo
}
comp replicator pl
comp replicator plan -o ''
comp replicator apikey ''
comp replicator snapshot --o
comp replicator apply "$DIR/pl"
comp replicator -c "$DIR/rep"
"""


def test_bash_completes_commands_choices_and_files_as_a_user_types_them(tmp_path: Path) -> None:
    """The script `replicator completion bash` prints, sourced in a real bash and asked as the
    shell asks at a TAB."""
    bash = shutil.which("bash")
    assert bash, "bash is part of every machine this runs on"
    (tmp_path / "plan.json").write_text("{}")
    (tmp_path / "replicator.yaml").write_text("")
    env = {"PATH": os.environ["PATH"], "REPLICATOR": sys.executable, "DIR": str(tmp_path)}
    out = subprocess.run([bash, "-c", COMPLETE], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "plan ",
        "text json ",
        "create list revoke ",
        "--out --output ",
        f"{tmp_path}/plan.json ",
        f"{tmp_path}/replicator.yaml ",
    ]


@pytest.mark.parametrize("shell", ["zsh", "tcsh", "fish", "powershell"])
def test_every_shell_gets_a_script_naming_every_command(shell: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "replicator", "completion", shell], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    for command in ("validate", "plan", "apply", "snapshot", "reconcile", "explain", "run", "completion"):
        assert command in out.stdout, (shell, command)


def test_an_unknown_shell_is_a_usage_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "replicator", "completion", "cmd.exe"], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "invalid choice: 'cmd.exe'" in out.stderr
