"""Group name patterns: ``#{name}`` and ``#{name:FORMAT}`` with a printf-style FORMAT. Pure."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

PLACEHOLDERS = (
    "workspaceIdentifier",
    "customerIdentifier",
    "projectIdentifier",
    "platformGroupAlias",
    "platform",
    "tenantLocalId",
)
"""Every placeholder besides ``tag<Name>``. ``customerIdentifier`` is the legacy alias of
``workspaceIdentifier``."""

_TOKEN = re.compile(r"#\{([^{}:]*)(?::([^{}]*))?\}")
_FORMAT = re.compile(r"%[-+ 0#]*(\d+)?(\.\d+)?([sdioxX])")
_TAG = re.compile(r"tag([A-Za-z0-9_]+)")


class PatternError(ValueError):
    """The pattern cannot be used (unknown placeholder, bad format, missing alias)."""


class RenderError(ValueError):
    """The pattern is fine but this tenant's values cannot fill it (missing tag, non-number for %d)."""


@dataclass(frozen=True)
class Token:
    name: str
    fmt: str | None
    text: str


def parse_pattern(pattern: str) -> list[str | Token]:
    """Split a pattern into literal text and placeholders; raise PatternError for every problem."""
    return list(_parsed(pattern))


@functools.lru_cache(maxsize=256)
def _parsed(pattern: str) -> tuple[str | Token, ...]:
    """``parse_pattern``, once per pattern: patterns are few (per platform) and renders many (per
    group of every tenant)."""
    parts, problems = _scan(pattern)
    if problems:
        raise PatternError("; ".join(problems))
    return tuple(parts)


def _scan(pattern: str) -> tuple[list[str | Token], list[str]]:
    parts: list[str | Token] = []
    pos = 0
    problems: list[str] = []
    for m in _TOKEN.finditer(pattern):
        if m.start() > pos:
            text = pattern[pos : m.start()]
            if "#{" in text:
                problems.append(f"unclosed placeholder at {text[text.index('#{') :]!r}")
            parts.append(text)
        name, fmt = m.group(1).strip(), m.group(2)
        if name not in PLACEHOLDERS and not _TAG.fullmatch(name):
            problems.append(f"unknown placeholder #{{{name}}} (known: {', '.join(PLACEHOLDERS)}, tag<Name>)")
        if fmt is not None and not _FORMAT.fullmatch(fmt):
            problems.append(f"#{{{m.group(0)[2:-1]}}}: {fmt!r} is not a format like %.7s or %03d")
        parts.append(Token(name, fmt, m.group(0)))
        pos = m.end()
    rest = pattern[pos:]
    if "#{" in rest:
        problems.append(f"unclosed placeholder at {rest[rest.index('#{') :]!r}")
    if rest:
        parts.append(rest)
    return parts, problems


def check_group_pattern(pattern: str) -> None:
    """Raise PatternError, naming every problem, unless the pattern parses and contains
    ``#{platformGroupAlias}``."""
    parts, problems = _scan(pattern)
    if not any(isinstance(p, Token) and p.name == "platformGroupAlias" for p in parts):
        problems.append(
            "must contain #{platformGroupAlias}, otherwise the groups of two roles of one tenant collide"
        )
    if problems:
        raise PatternError("; ".join(problems))


def tag_key(placeholder: str, tags: Mapping[str, str]) -> str | None:
    """The project tag a ``tag<Name>`` placeholder reads: ``tagCostCenter`` -> ``costCenter``
    (exact first, then case-insensitively)."""
    name = placeholder[3:]
    wanted = name[:1].lower() + name[1:]
    if wanted in tags:
        return wanted
    return next((k for k in tags if k.lower() == name.lower()), None)


def render(pattern: str, values: Mapping[str, str], tags: Mapping[str, str] | None = None) -> str:
    """Fill a pattern. ``values`` holds the plain placeholders; ``tags`` the tenant's tags (see
    ``compile.tenant_tags``)."""
    out: list[str] = []
    for part in _parsed(pattern):
        if isinstance(part, str):
            out.append(part)
            continue
        if part.name == "customerIdentifier":
            value = values.get("workspaceIdentifier")
        elif part.name.startswith("tag") and part.name not in PLACEHOLDERS:
            key = tag_key(part.name, tags or {})
            if key is None:
                raise RenderError(
                    f"{part.text}: no tag {part.name[3:4].lower() + part.name[4:]!r} on the project, the "
                    "tenant, its landing zone or the workspace"
                )
            value = (tags or {})[key]
        else:
            value = values.get(part.name)
        if value is None:
            raise RenderError(f"{part.text}: no value")
        out.append(_format(part, value))
    return "".join(out)


def _format(token: Token, value: str) -> str:
    if token.fmt is None:
        return value
    conv = token.fmt[-1]
    if conv == "s":
        return token.fmt % value
    try:
        number = int(value, 10)
    except ValueError:
        raise RenderError(f"{token.text}: {value!r} is not a number") from None
    return token.fmt % number
