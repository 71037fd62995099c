"""Reading and editing a project's IAM policy: only the ``group:<email>`` member of unconditional
bindings of one role changes."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def member_key(email: str) -> str:
    return f"group:{email}"


def bound_roles(policy: Mapping[str, Any], email: str) -> frozenset[str]:
    """Every role of an unconditional binding that names ``group:<email>``."""
    key = member_key(email).casefold()
    return frozenset(
        str(b["role"])
        for b in policy.get("bindings") or []
        if not b.get("condition") and key in (str(m).casefold() for m in b.get("members") or [])
    )


def policy_with(policy: Mapping[str, Any], role: str, email: str, bound: bool) -> dict[str, Any] | None:
    """``policy`` with ``group:<email>`` bound to ``role`` (or not), or None when it already is.

    Only unconditional bindings of ``role`` change; a binding is dropped only when removing our
    member emptied it. Every other member, binding, condition and field is kept as read."""
    member = member_key(email)
    key = member.casefold()
    out = copy.deepcopy(dict(policy))
    bindings: list[dict[str, Any]] = list(out.get("bindings") or [])
    ours = [b for b in bindings if b.get("role") == role and not b.get("condition")]
    has = any(key in (str(m).casefold() for m in b.get("members") or []) for b in ours)
    if has == bound:
        return None
    if bound:
        if ours:
            ours[0]["members"] = [*(ours[0].get("members") or []), member]
        else:
            bindings.append({"role": role, "members": [member]})
    else:
        kept: list[dict[str, Any]] = []
        for b in bindings:
            if any(b is o for o in ours):
                before = list(b.get("members") or [])
                b["members"] = [m for m in before if str(m).casefold() != key]
                if before and not b["members"]:
                    continue
            kept.append(b)
        bindings = kept
    out["bindings"] = bindings
    if any(b.get("condition") for b in bindings):
        out["version"] = 3
    return out
