"""Which tenants a change of the inventory touches: the daemon compares the desired state of only
those after a reload, not of every tenant. Pure: plain data in, plain data out.

A tenant is touched by a change of its own object, of its project or workspace (tags), of a
binding of its project, and of a user or user group such a binding names, directly or as a
member of a group: in the inventory before the change or after it (a binding that moved from
one project to another touches both). The indexes from users, groups, projects and workspaces
to tenants are built once per inventory (:class:`~replicator.core.inventory.Inventory`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from replicator.core.inventory import Inventory

_ABSENT = object()


def touched_tenants(old: Inventory, new: Inventory) -> set[str]:
    """Keys of the tenants of ``old`` or ``new`` whose desired state the difference between the two
    may change (a superset: the caller compiles these and compares)."""
    tenants = _changed(old.tenants, new.tenants)
    projects = _changed(old.projects, new.projects)
    projects |= _changed(old.bindings_by_project, new.bindings_by_project)
    workspaces = _changed(old.workspaces, new.workspaces)
    users = _changed(old.users, new.users)
    groups = _changed(old.groups, new.groups)
    for inv in (old, new):
        reached = set(groups)
        for user in users:
            projects |= inv.projects_by_subject.get(("user", user), frozenset())
            reached.update(inv.groups_by_member.get(user, ()))
        for group in reached:
            projects |= inv.projects_by_subject.get(("group", group), frozenset())
        for project in projects:
            tenants.update(inv.tenants_by_project.get(project, ()))
        if workspaces:
            tenants.update(
                key for key, t in inv.tenants.items() if t.metadata.owned_by_workspace in workspaces
            )
    return tenants


def _changed(old: Mapping[Any, Any], new: Mapping[Any, Any]) -> set[Any]:
    """Keys whose value differs between ``old`` and ``new``, or that only one of them has."""
    if old is new:
        return set()
    changed = {k for k, v in new.items() if (o := old.get(k, _ABSENT)) is not v and o != v}
    changed.update(k for k in old if k not in new)
    return changed
