"""The strings Graph and ARM want, derived here: OData literals, mail nicknames, role definition
GUIDs, deterministic assignment names."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence

MAX_FILTER_VALUES = 15
"""Graph accepts at most 15 values in one ``in (...)`` filter expression."""
FILTER_MAX_DISPLAY_NAME = 120
"""Graph's ``$filter`` takes displayName values of at most 120 characters (msgraph-sdk-dotnet#159)."""

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
ROLE_PATTERN = re.compile(
    rf"(?:/subscriptions/{_GUID}|/providers/Microsoft\.Management/managementGroups/[^/]+)?"
    rf"/providers/Microsoft\.Authorization/roleDefinitions/{_GUID}|{_GUID}",
    re.IGNORECASE,
)
# Entra ID refuses control characters in a group's displayName (up to 256 characters).
# mailNickname: ASCII without @ ( ) \ [ ] " ; : < > , and space, at most 64 characters.
_NICKNAME_REFUSED = re.compile(r"[^\x21-\x7e]|[@()\\\[\]\";:<>,]")
_ASSIGNMENT_NAMESPACE = uuid.UUID("5b0f7f0a-7c4e-4f0e-9d8b-2f2a4c1d6e11")
GUID_ONLY = re.compile(_GUID)
DEFAULT_GRAPH = "https://graph.microsoft.com"


def odata_string(value: str) -> str:
    """An OData string literal: single-quoted, a single quote inside doubled."""
    return "'" + value.replace("'", "''") + "'"


def mail_nickname(name: str) -> str:
    """A ``mailNickname`` Graph accepts for a group named ``name`` (ASCII, no special characters,
    at most 64); a hash of the name keeps changed or shortened nicknames distinct."""
    safe = _NICKNAME_REFUSED.sub("-", name).strip(".") or "group"
    if safe == name and len(safe) <= 64:
        return safe
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{safe[:55]}-{digest}"


def role_guid(role: str) -> str:
    """The role definition's GUID (lower case) of a GUID or a full ARM id."""
    return role.rstrip("/").rsplit("/", 1)[-1].lower()


def assignment_name(scope: str, group_id: str, role: str) -> str:
    """The deterministic name of the assignment of ``role`` to a group on ``scope``: a repeated PUT
    is the same assignment."""
    key = f"{scope.lower()}|{group_id.lower()}|{role_guid(role)}"
    return str(uuid.uuid5(_ASSIGNMENT_NAMESPACE, key))


def batches(values: Sequence[str]) -> list[list[str]]:
    """``values`` in runs of at most ``MAX_FILTER_VALUES`` (one filter expression each)."""
    return [list(values[i : i + MAX_FILTER_VALUES]) for i in range(0, len(values), MAX_FILTER_VALUES)]
