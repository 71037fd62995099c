"""The ownership marker: how a driver tells its own groups from everyone else's.

Every group a driver creates carries the description ``"<OWNER_MARKER> tenant=<tenant key>"``. A
group whose id the state store recorded counts as ours when its description starts with the
marker; a group found only by name (a create that was never confirmed, a crash leftover) counts
as ours only when the marker also names this tenant. Nothing that is not ours is changed or
deleted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from platforms.contract import ForeignObjectError, PendingError, TenantRef
from platforms.kit.errors import NotFoundError

OWNER_MARKER = "managed-by: replicator"
"""Description/marker text that tells a platform object is owned by this replicator."""


def owner_marker(tenant: TenantRef) -> str:
    """The description a driver gives every group it creates: ours, and for which tenant."""
    return f"{OWNER_MARKER} tenant={tenant.key}"


def is_marked(description: str) -> bool:
    """The object carries our marker (for some tenant)."""
    return description.startswith(OWNER_MARKER)


def is_marked_for(description: str, tenant: TenantRef) -> bool:
    """The object carries our marker naming this tenant (needed to adopt a group found by name)."""
    return is_marked(description) and f"tenant={tenant.key}" in description[len(OWNER_MARKER) :].split()


class MarkedGroup(Protocol):
    """What the ownership helpers need of a driver's own group record."""

    @property
    def id(self) -> str: ...

    @property
    def description(self) -> str: ...


G = TypeVar("G", bound=MarkedGroup)


def adoptable(group: G | None, tenant: TenantRef, refusal: Callable[[G], str]) -> str | None:
    """``create_group``'s check of the group already carrying the name: None when there is none,
    its id when it is ours for this tenant (a create that was never confirmed), else
    :class:`ForeignObjectError` with ``refusal(group)``."""
    if group is None:
        return None
    if is_marked_for(group.description, tenant):
        return group.id
    raise ForeignObjectError(refusal(group))


async def create_or_adopt(
    platform: str,
    tenant: TenantRef,
    name: str,
    find: Callable[[], Awaitable[G | None]],
    create: Callable[[], Awaitable[str]],
    conflicts: tuple[type[Exception], ...] = (),
    refusal: Callable[[G], str] | None = None,
) -> str:
    """``create_group`` on a directory of marked groups: the id of the group ``find`` finds by
    ``name`` when it is ours for this tenant (see :func:`adoptable`; another one's is foreign),
    else of the one ``create`` makes. A create refused with one of ``conflicts`` (the name is
    taken) looks again; still nothing there is :class:`PendingError`: the directory's reads have
    not caught up with a create (ours from an earlier attempt or run, or someone else's), and the
    next look tells which."""

    def foreign(group: G) -> str:
        return (
            f"{platform} create_group: a group named {name!r} already exists and is not ours "
            f"(id {group.id}, for {tenant.key})"
        )

    async def existing() -> str | None:
        return adoptable(await find(), tenant, refusal or foreign)

    found = await existing()
    if found is not None:
        return found
    try:
        return await create()
    except conflicts as exc:
        found = await existing()
        if found is not None:
            return found
        raise PendingError(
            f"{platform} create_group: {name!r} is taken, but no such group is visible yet"
        ) from exc


async def delete_marked_group(
    platform: str,
    tenant: TenantRef,
    name: str,
    group_id: str | None,
    by_id: Callable[[str], Awaitable[G | None]],
    by_name: Callable[[], Awaitable[G | None]],
    delete: Callable[[G], Awaitable[object]],
    label: Callable[[G], str] | None = None,
) -> None:
    """``delete_group`` on a directory of marked groups: the group is read by its recorded id (ours
    with any marker), or by name when the store has no id (ours only with the marker naming this
    tenant), and deleted; gone already (before or during the delete: :class:`NotFoundError`) is
    success, not ours is :class:`ForeignObjectError` (naming the group by ``label(group)``, default
    ``name``)."""
    if group_id is None:
        group = await by_name()
        ours = group is None or is_marked_for(group.description, tenant)
    else:
        group = await by_id(group_id)
        ours = group is None or is_marked(group.description)
    if group is None:
        return
    if not ours:
        shown = label(group) if label is not None else name
        raise ForeignObjectError(f"{platform} delete_group: group {shown!r} ({group.id}) is not ours")
    try:
        await delete(group)
    except NotFoundError:
        return
