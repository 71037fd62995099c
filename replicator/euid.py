"""euid patterns: how a user's external id becomes the name a platform knows them by. Pure."""

from __future__ import annotations

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


def transform_euid(pattern: str, euid: str) -> str:
    """``%s`` inserts the euid unchanged, ``%S`` upper-cased, ``%%`` is ``%``."""
    check_euid_pattern(pattern)

    def sub(m: re.Match[str]) -> str:
        d = m.group(1)
        return euid if d == "s" else euid.upper() if d == "S" else "%"

    return _DIRECTIVE.sub(sub, pattern)
