"""Plans as people and CI read them: text (one line per change, grouped by tenant, then a summary
line) and JSON with ``formatVersion`` and a stable action vocabulary."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from platforms.contract import Action, Change
from replicator.core.plan import Plan
from replicator.engine.results import UserResult

FORMAT_VERSION = 1

_TEXT = {
    Action.CREATE_GROUP: "+ create group {group}",
    Action.ENSURE_USER: "+ ensure user {euid}",
    Action.ADD_MEMBER: "+ add member {user} to {group}",
    Action.GRANT: "+ grant {role} to {group}",
    Action.REVOKE: "- revoke {role} from {group}",
    Action.REMOVE_MEMBER: "- remove member {user} from {group}",
    Action.DELETE_GROUP: "- delete group {group}",
}


def change_text(c: Change) -> str:
    user = c.user.name if c.user else (c.euid or "")
    line = _TEXT[c.action].format(group=c.group, user=user, role=c.role, euid=c.euid)
    return line + (f"  ({c.note})" if c.note else "")


def change_json(c: Change) -> dict[str, Any]:
    out: dict[str, Any] = {"action": c.action.value, "group": c.group, "alias": c.alias}
    if c.user is not None:
        out["platformUser"] = c.user.name
        out["platformUserId"] = c.user.id
    if c.euid is not None:
        out["euid"] = c.euid
    if c.role is not None:
        out["role"] = c.role
    if c.note:
        out["note"] = c.note
    return out


def summary(plans: Sequence[Plan]) -> dict[str, int]:
    return {
        "add": sum(p.adds for p in plans),
        "remove": sum(p.removes + len(p.withheld) for p in plans),
        "warnings": sum(len(p.warnings) for p in plans),
    }


def plans_text(plans: Sequence[Plan], errors: Sequence[tuple[str, str]] = ()) -> str:
    lines: list[str] = []
    for p in plans:
        ref = p.tenant.ref
        lines.append(f"{ref.key} ({ref.local_id}, landing zone {p.tenant.landing_zone})")
        if not p.changes and not p.withheld:
            lines.append("  no changes")
        lines += ["  " + change_text(c) for c in p.changes]
        if p.blocked:
            lines.append(f"  ! {p.blocked}")
            lines += ["  (withheld) " + change_text(c) for c in p.withheld]
        lines += [f"  ~ keep {k.role} on {k.group} ({k.reason})" for k in p.kept]
        lines += [f"  ! {w.code.value}: {w.message}" for w in p.warnings]
    for key, error in errors:
        lines.append(f"{key}\n  ERROR: {error}")
    s = summary(plans)
    lines.append(f"Plan: {s['add']} to add, {s['remove']} to remove, {s['warnings']} warnings.")
    return "\n".join(lines) + "\n"


_COLOURS = {"+": "32", "-": "31", "!": "33", "~": "36"}
"""ANSI colours of the plan's lines by their mark: green adds, red removals, yellow warnings and
the guard, cyan kept grants."""


def coloured(text: str, stream: Any) -> str:
    """``text`` (plan output) with ANSI colours when ``stream`` is a terminal and ``NO_COLOR`` is
    unset (no-color.org); unchanged otherwise (a pipe, a file, CI logs)."""
    import os

    if os.environ.get("NO_COLOR") or not getattr(stream, "isatty", lambda: False)():
        return text
    out = []
    for line in text.split("\n"):
        stripped = line.lstrip()
        mark = "-" if stripped.startswith("(withheld)") else stripped[:1]
        colour = "31" if stripped.startswith("ERROR") else _COLOURS.get(mark)
        out.append(f"\x1b[{colour}m{line}\x1b[0m" if colour and stripped else line)
    return "\n".join(out)


def plans_json(
    plans: Sequence[Plan],
    errors: Sequence[tuple[str, str]] = (),
    artifact: dict[str, Any] | None = None,
    held: Mapping[str, str] | None = None,
    users: Sequence[UserResult] = (),
) -> str:
    """The plan as JSON; with ``artifact`` (see :mod:`replicator.engine.artifacts`) a plan file for
    ``apply``."""
    doc: dict[str, Any] = {
        "formatVersion": FORMAT_VERSION,
        "tenants": [
            {
                "tenant": p.tenant.ref.key,
                "platform": p.tenant.ref.platform,
                "localId": p.tenant.ref.local_id,
                "fingerprint": p.fingerprint,
                "changes": [change_json(c) for c in p.changes],
                "withheld": [change_json(c) for c in p.withheld],
                "blocked": p.blocked,
                "kept": [{"group": k.group, "role": k.role, "reason": k.reason} for k in p.kept],
                "warnings": [
                    {
                        "code": w.code.value,
                        "subject": w.subject,
                        **({"user": w.user} if w.user else {}),
                        **({"euid": w.euid} if w.euid else {}),
                        "message": w.message,
                    }
                    for w in p.warnings
                ],
            }
            for p in plans
        ],
        "errors": [{"tenant": k, "error": e} for k, e in errors],
        "held": [{"tenant": k, "reason": why} for k, why in sorted((held or {}).items())],
        "users": [users_json(u) for u in users],
        "summary": summary(plans),
    }
    if artifact is not None:
        doc["artifact"] = artifact
    return json.dumps(doc, indent=2) + "\n"


def users_json(u: UserResult) -> dict[str, Any]:
    """One platform's deprovisioning of created users (``deprovisionCreatedUsers``)."""
    plan = u.plan
    return {
        "platform": u.platform,
        "delete": [{"id": c.user_id, "euid": c.euid} for c in (plan.delete if plan else ())],
        "waiting": [
            {"id": c.user_id, "euid": c.euid, "deleteAfter": at.isoformat()}
            for c, at in (plan.waiting if plan else ())
        ],
        "blocked": plan.blocked if plan else None,
        "deleted": u.deleted,
        "error": u.error,
    }


def users_text(users: Sequence[UserResult], applied: bool) -> list[str]:
    """Lines about each platform's created users no binding needs (none when there are none)."""
    lines: list[str] = []
    for u in users:
        plan = u.plan
        if u.error:
            lines.append(f"{u.platform}: users: FAILED: {u.error}")
        if plan is None or not (plan.delete or plan.waiting):
            continue
        lines.append(f"{u.platform}: users the replicator created that no binding needs")
        for c in plan.delete:
            verb = "deleted" if applied and not plan.blocked else "delete"
            lines.append(f"  - {verb} user {c.euid} (id {c.user_id}): grace period over")
        for c, at in plan.waiting:
            when = f"{at:%Y-%m-%d %H:%M} UTC"
            lines.append(f"  ~ user {c.euid} (id {c.user_id}): deleted after {when} if still unneeded")
        if plan.blocked:
            lines.append(f"  ! {plan.blocked}; --allow-deletions confirms")
    return lines
