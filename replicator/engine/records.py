"""What the engine writes to the state store about the platform: the records brought in line with
an observation before anything is applied, and the record of each applied change."""

from __future__ import annotations

from collections.abc import Sequence

from platforms.contract import Action, Change, ObservedTenant, OwnedGroup
from replicator.core.model import DesiredTenant
from state import Store


def adopt(
    store: Store,
    desired: DesiredTenant,
    observed: ObservedTenant,
    owned: Sequence[OwnedGroup],
) -> None:
    """Bring the store's records in line with what the platform shows, before anything is
    applied. A change whose answer was lost (a dropped connection, a timeout after the platform
    acted, a crash between the call and the record) left the record behind the platform:

    - groups the driver found by name with our marker are confirmed; vanished ones forgotten;
    - a role that is on an owned group and desired for it is recorded as ours (its grant may
      have happened without the answer reaching us), so that it is revoked when unmapped;
    - a recorded role or member the group no longer has is forgotten (its revoke or removal
      happened), so that nobody's later access is mistaken for ours."""
    ref = desired.ref
    platform, tenant = ref.platform, ref.key
    known = {o.name: o for o in owned}
    wanted_roles = {g.name: g.roles for g in desired.groups}
    for g in observed.groups:
        rec = known.get(g.name)
        if rec is None or rec.platform_id != g.id:
            store.confirm_group(platform, tenant, g.name, g.id, g.alias)
        recorded_roles = rec.roles if rec is not None else frozenset()
        for role in sorted((g.roles & wanted_roles.get(g.name, frozenset())) - recorded_roles):
            store.add_group_role(platform, tenant, g.name, role)
        for role in sorted(recorded_roles - g.roles):
            store.remove_group_role(platform, tenant, g.name, role)
        present = {u.id for u in g.members}
        for user_id in sorted((rec.members if rec is not None else frozenset()) - present):
            store.remove_group_member(platform, tenant, g.name, user_id)
    for name in observed.vanished:
        store.forget_group(platform, tenant, name)


def record(
    store: Store, platform: str, tenant: str, change: Change, new_id: str | None, ids: dict[str, str]
) -> None:
    if change.action is Action.CREATE_GROUP and new_id:
        ids[change.group] = new_id
        store.confirm_group(platform, tenant, change.group, new_id, change.alias)
    elif change.action is Action.GRANT and change.role:
        store.add_group_role(platform, tenant, change.group, change.role)
    elif change.action is Action.REVOKE and change.role:
        store.remove_group_role(platform, tenant, change.group, change.role)
    elif change.action is Action.ADD_MEMBER and change.user is not None:
        store.add_group_member(platform, tenant, change.group, change.user.id)
    elif change.action is Action.REMOVE_MEMBER and change.user is not None:
        store.remove_group_member(platform, tenant, change.group, change.user.id)
    elif change.action is Action.DELETE_GROUP:
        store.forget_group(platform, tenant, change.group)
