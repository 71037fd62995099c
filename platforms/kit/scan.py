"""Observing the groups of a directory whose groups carry the ownership marker (AWS, Azure, GCP,
OpenStack): the ownership rules of ``Driver.observe`` once, and one run's listing of every group."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Generic

from platforms.contract import ObservedGroup, ObservedTenant, OwnedGroup, TenantRef
from platforms.kit.ownership import G, is_marked, is_marked_for


class GroupScan(Generic[G]):
    """One run's listing of every group of a directory (``Driver.prepare``), by id and by ``key``
    (the group's name; GCP: its email). What it holds is as old as the run: a group found gone
    later in the run is forgotten, so that observe reads it again (vanished) or takes its name as
    free."""

    def __init__(self, groups: Iterable[G], key: Callable[[G], str]) -> None:
        found = list(groups)
        self._key = key
        self.by_id: dict[str, G] = {g.id: g for g in found}
        self.by_key: dict[str, G] = {key(g): g for g in found}

    def forget(self, group: G) -> bool:
        """Drop ``group``; False when it is not this scan's (it was read since, not scanned)."""
        if self.by_id.get(group.id) is not group:
            return False
        del self.by_id[group.id]
        if self.by_key.get(self._key(group)) is group:
            del self.by_key[self._key(group)]
        return True


class GoneSinceScan(Exception):
    """Raised by the ``observe_group`` of :func:`observe_marked_groups` when a group taken from
    this run's :class:`GroupScan` turns out deleted since (its member list answered not found) and
    the driver has forgotten it: the tenant is observed again, the group now read by id (vanished)
    or its name free."""


async def observe_marked_groups(
    tenant: TenantRef,
    owned: Sequence[OwnedGroup],
    desired_names: Mapping[str, str],
    by_id: Callable[[str], Awaitable[G | None]],
    by_name: Callable[[str], Awaitable[G | None]],
    observe_group: Callable[[G, str], Awaitable[ObservedGroup]],
) -> ObservedTenant:
    """The ownership rules of ``Driver.observe`` for platforms whose groups carry a description
    marker: a recorded group is ours while it carries the marker; a group found only by name (a
    create that was never confirmed, or a leftover of a crash) is ours only when the marker names
    this tenant; everything else with our names is foreign; a recorded group that is gone vanished.
    A :class:`GoneSinceScan` from ``observe_group`` starts the observation again: the driver forgot
    that group first, so each restart has one scanned group fewer and this ends."""

    async def once() -> ObservedTenant:
        groups: list[ObservedGroup] = []
        vanished: list[str] = []
        foreign: dict[str, str] = {}
        for record in owned:
            if record.platform_id is not None:
                group = await by_id(record.platform_id)
                ours = group is not None and is_marked(group.description)
            else:
                group = await by_name(record.name)
                ours = group is not None and is_marked_for(group.description, tenant)
            if group is None:
                vanished.append(record.name)
            elif not ours:
                foreign[record.name] = group.id
            else:
                groups.append(await observe_group(group, record.alias))
        checked = {record.name for record in owned}
        for alias, name in desired_names.items():
            if name in checked:
                continue
            checked.add(name)
            group = await by_name(name)
            if group is None:
                continue
            if is_marked_for(group.description, tenant):
                groups.append(await observe_group(group, alias))
            else:
                foreign[name] = group.id
        return ObservedTenant(groups=tuple(groups), vanished=tuple(vanished), foreign=foreign)

    while True:
        try:
            return await once()
        except GoneSinceScan:
            continue
