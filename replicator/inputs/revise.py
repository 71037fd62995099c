"""Checking a change of users and user groups against an inventory that validated, by what the
change touches instead of validating the whole inventory again (pure: no I/O).

An identity source's write (a SCIM create or PATCH, an OIDC login) changes a user or a group. On
an inventory that validated, only the rules about what it touches can break: a user's euid must be
unique, a group's members must be users, a group that a binding names must stay. :func:`revise`
checks exactly those, with the same problems (file, line, object, field and message) as
:func:`~replicator.inputs.validate.validate` gives for the whole inventory, and builds the new
inventory from the old one. Any other change (a binding, a project, a tenant, deleting a user)
returns None: the caller validates the whole inventory as before. A property test holds the two
paths to the same answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from replicator.core.inventory import GroupSubject, MeshUser, MeshUserGroup, fold, object_key
from replicator.inputs.loader import InputError, Loaded, LoadedObject, Problem
from replicator.inputs.validate import Validated, euid_problem, member_problems

ObjectId = tuple[str, str]
"""(kind, object key)."""

_REVISED = ("meshUser", "meshUserGroup")


@dataclass(frozen=True)
class Edit:
    """A change as the store applies it (see ``replicator.sources.stored.candidate``): ``puts``
    stay in the inventory, ``out`` leave it (deleted or deprovisioned), ``deprovisioned_users`` is
    the whole set after the change, and ``problems`` were found before looking at references."""

    puts: Sequence[tuple[ObjectId, LoadedObject]]
    out: Collection[ObjectId]
    deletes: Collection[ObjectId]
    deprovisioned_users: frozenset[str]
    problems: Sequence[Problem] = ()


@dataclass(frozen=True)
class _Index:
    keys: list[ObjectId | None]
    """The (kind, key) of each of ``loaded.objects``, in order (None: a binding without a name)."""
    positions: dict[ObjectId, int]
    euids: dict[str, ObjectId]
    """Folded euid -> the user that has it."""
    bound_groups: frozenset[str]
    """The user groups that bindings name."""


class Checked:
    """An inventory that validated: what was read (``loaded``) and what :func:`validate` made of it,
    with the indexes :func:`revise` uses (built on first use, then carried from one revision to the
    next). Never changed in place: a revision is a new Checked, so a thread still reading the old
    one is not disturbed."""

    def __init__(self, loaded: Loaded, validated: Validated, index: _Index | None = None) -> None:
        self.loaded = loaded
        self.validated = validated
        self._index = index

    def with_revision(self, revision: int) -> Checked:
        """This inventory as the store holds it at objects revision ``revision``."""
        return Checked(dataclasses.replace(self.loaded, store_revision=revision), self.validated, self._index)

    def index(self) -> _Index:
        if self._index is None:  # two threads may both build it: the same, and assigned at once
            keys: list[ObjectId | None] = []
            euids: dict[str, ObjectId] = {}
            for lo in self.loaded.objects:
                key = object_key(lo.obj)
                oid = (lo.obj.kind, key) if key is not None else None
                keys.append(oid)
                if isinstance(lo.obj, MeshUser) and lo.obj.spec.euid and oid is not None:
                    euids.setdefault(fold(lo.obj.spec.euid), oid)
            bound = frozenset(
                s.group
                for b in self.validated.inventory.bindings
                for s in b.spec.subjects
                if isinstance(s, GroupSubject)
            )
            positions = {k: i for i, k in enumerate(keys) if k is not None}
            self._index = _Index(keys, positions, euids, bound)
        return self._index


def revisable(edit: Edit) -> bool:
    """Whether :func:`revise` can check ``edit``: users and user groups put or deprovisioned,
    user groups deleted."""
    return (
        all(oid[0] in _REVISED for oid, _ in edit.puts)
        and all(oid[0] in _REVISED for oid in edit.out)
        and all(oid[0] == "meshUserGroup" for oid in edit.deletes)
    )


def revise(base: Checked, edit: Edit) -> Checked | None:
    """The inventory after ``edit``, checked by what it touches; raises InputError with every
    problem (as :func:`validate` would find them). None when ``edit`` is not :func:`revisable`,
    deletes a group a binding names or has problems of its own (an object of a file, an external
    id too long): the whole inventory is then validated, which locates every consequence."""
    if edit.problems or not revisable(edit):
        return None
    index = base.index()
    if any(oid[1] in index.bound_groups for oid in edit.deletes):
        return None
    inventory = base.validated.inventory
    objects, keys = list(base.loaded.objects), list(index.keys)
    positions, euids = dict(index.positions), dict(index.euids)
    users, groups = dict(inventory.users), dict(inventory.groups)
    problems: list[Problem] = []

    # Out with what the edit removes or replaces (its euid is free again), in with the new.
    put_ids = {oid for oid, _ in edit.puts}
    dropped: set[int] = set()
    for oid in put_ids | set(edit.out):
        at = positions.get(oid)
        if at is None:
            continue
        old = objects[at].obj
        if isinstance(old, MeshUser) and old.spec.euid and euids.get(fold(old.spec.euid)) == oid:
            del euids[fold(old.spec.euid)]
        (users if oid[0] == "meshUser" else groups).pop(oid[1], None)
        if oid not in put_ids:
            dropped.add(at)
    for oid, lo in edit.puts:
        at = positions.get(oid)
        if at is None:
            positions[oid] = len(objects)
            objects.append(lo)
            keys.append(oid)
        else:
            objects[at] = lo
        if isinstance(lo.obj, MeshUser):
            users[oid[1]] = lo.obj
        else:
            groups[oid[1]] = lo.obj
    for oid, lo in edit.puts:
        obj = lo.obj
        if isinstance(obj, MeshUser) and obj.spec.euid:
            other = euids.get(fold(obj.spec.euid))
            if other is not None and other != oid:
                problems.append(euid_problem(lo, objects[positions[other]]))
            euids.setdefault(fold(obj.spec.euid), oid)
        elif isinstance(obj, MeshUserGroup):
            problems += member_problems(lo, users, edit.deprovisioned_users)
    if problems:
        raise InputError(problems)
    if dropped:
        objects = [lo for i, lo in enumerate(objects) if i not in dropped]
        keys = [k for i, k in enumerate(keys) if i not in dropped]
        positions = {k: i for i, k in enumerate(keys) if k is not None}
    loaded = dataclasses.replace(
        base.loaded, objects=objects, problems=[], deprovisioned_users=edit.deprovisioned_users
    )
    validated = dataclasses.replace(
        base.validated, inventory=inventory.model_copy(update={"users": users, "groups": groups})
    )
    return Checked(loaded, validated, _Index(keys, positions, euids, index.bound_groups))
