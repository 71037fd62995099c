"""Which tenants a change of the inventory touches: the daemon compares the desired state of only
those after a reload, not of every tenant. Pure: plain data in, plain data out.

A tenant is touched by a change of its own object, of its project or workspace (tags), of a
binding of its project, and of a user or user group such a binding names, directly or as a
member of a group: in the inventory before the change or after it (a binding that moved from
one project to another touches both). The indexes from users, groups, projects and workspaces
to tenants are built once per inventory (:class:`~replicator.core.inventory.Inventory`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from replicator.core.inventory import KINDS, Inventory, MeshProject, MeshProjectBinding, MeshTenant

_ABSENT = object()


def touched_tenants(old: Inventory, new: Inventory, suspects: Iterable[Any] | None = None) -> set[str]:
    """Keys of the tenants of ``old`` or ``new`` whose desired state the difference between the two
    may change (a superset: the caller compiles these and compares). ``suspects``: the objects (of
    either inventory) that may differ, such as those of the files that changed; only their keys
    are compared. None: every object is."""
    if suspects is None:
        tenants = _changed(old.tenants, new.tenants)
        projects = _changed(old.projects, new.projects)
        projects |= _changed(old.bindings_by_project, new.bindings_by_project)
        workspaces = _changed(old.workspaces, new.workspaces)
        users = _changed(old.users, new.users)
        groups = _changed(old.groups, new.groups)
    else:
        keys: dict[str, set[Any]] = {kind: set() for kind in KINDS}
        for o in suspects:
            m = o.metadata
            if isinstance(o, MeshTenant):
                keys[o.kind].add(o.key)
            elif isinstance(o, MeshProject):
                keys[o.kind].add((m.owned_by_workspace, m.name))
            elif isinstance(o, MeshProjectBinding):
                keys[o.kind].add((m.owned_by_workspace, m.owned_by_project))
            else:
                keys[o.kind].add(m.name)
        tenants = _changed(old.tenants, new.tenants, keys["meshTenant"])
        projects = _changed(old.projects, new.projects, keys["meshProject"])
        projects |= _changed(old.bindings_by_project, new.bindings_by_project, keys["meshProjectBinding"])
        workspaces = _changed(old.workspaces, new.workspaces, keys["meshWorkspace"])
        users = _changed(old.users, new.users, keys["meshUser"])
        groups = _changed(old.groups, new.groups, keys["meshUserGroup"])
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


def _changed(old: Mapping[Any, Any], new: Mapping[Any, Any], among: set[Any] | None = None) -> set[Any]:
    """Keys (``among`` these, if given) whose value differs between ``old`` and ``new``, or that
    only one of them has."""
    if among is not None:
        return {k for k in among if old.get(k, _ABSENT) != new.get(k, _ABSENT)}
    if old is new:
        return set()
    changed = {k for k, v in new.items() if (o := old.get(k, _ABSENT)) is not v and o != v}
    changed.update(k for k in old if k not in new)
    return changed
