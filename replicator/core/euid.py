"""euid patterns: how a user's external id becomes the name a platform knows them by. Pure."""

from __future__ import annotations

import functools
import re

_DIRECTIVE = re.compile(r"%(.)|%$", re.DOTALL)


class EuidPatternError(ValueError):
    """The euid pattern is not usable."""


def check_euid_pattern(pattern: str) -> None:
    """Raise unless the pattern has exactly one ``%s`` or ``%S``; ``%%`` is a literal percent."""
    slots = 0
    for m in _DIRECTIVE.finditer(pattern):
        d = m.group(1)
        if d in ("s", "S"):
            slots += 1
        elif d != "%":
            shown = f"%{d}" if d else "a lone % at the end"
            raise EuidPatternError(f"{shown} is not allowed (use %s, %S, or %% for a percent sign)")
    if slots != 1:
        raise EuidPatternError(f"needs exactly one %s or %S, found {slots}")


@functools.lru_cache(maxsize=64)
def _split(pattern: str) -> tuple[str, bool, str]:
    """A checked pattern as (text before the slot, upper-case?, text after), ``%%`` already ``%``.
    Patterns are few (one per platform) and euids many: this is parsed once per pattern."""
    check_euid_pattern(pattern)
    m = next(m for m in _DIRECTIVE.finditer(pattern) if m.group(1) in ("s", "S"))
    return (
        pattern[: m.start()].replace("%%", "%"),
        m.group(1) == "S",
        pattern[m.end() :].replace("%%", "%"),
    )


def transform_euid(pattern: str, euid: str) -> str:
    """``%s`` inserts the euid unchanged, ``%S`` upper-cased, ``%%`` is ``%``."""
    before, upper, after = _split(pattern)
    return before + (euid.upper() if upper else euid) + after
