"""Plan output in colour on a terminal, plain anywhere else."""

from __future__ import annotations

import io

import pytest

from replicator.cli.render import coloured

PLAN = """finance/ledger/aws (123, landing zone lz)
  + create group g
  - remove member bob from g
  ! DELETION_GUARD: 3 of 5
  (withheld) - remove member carol from g
  ~ keep admin on g (external)
Plan: 1 to add, 2 to remove, 1 warnings.
"""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_colours_by_each_line_s_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    lines = coloured(PLAN, Terminal()).split("\n")
    assert lines[0] == "finance/ledger/aws (123, landing zone lz)", "headings stay plain"
    assert lines[1] == "\x1b[32m  + create group g\x1b[0m"
    assert lines[2] == "\x1b[31m  - remove member bob from g\x1b[0m"
    assert lines[3].startswith("\x1b[33m")
    assert lines[4].startswith("\x1b[31m"), "a withheld removal is still a removal"
    assert lines[5].startswith("\x1b[36m")
    assert lines[6] == "Plan: 1 to add, 2 to remove, 1 warnings."


def test_no_colour_in_a_pipe_or_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert coloured(PLAN, io.StringIO()) == PLAN
    monkeypatch.setenv("NO_COLOR", "1")
    assert coloured(PLAN, Terminal()) == PLAN
