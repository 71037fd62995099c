"""What the engine writes to the state store about the platform: the records brought in line with
an observation before anything is applied, and the record of each applied change. Each function
is one blocking step (the engine runs it in a worker thread, off the event loop)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from platforms.contract import Action, Change, ObservedTenant, OwnedGroup, TenantRef
from replicator.core.model import DesiredTenant, ReplicationWarning
from state import Store


def group_names(store: Store, tenants: Sequence[DesiredTenant]) -> int:
    """How many group names these tenants' runs will look at: the owned ones and the desired ones."""
    names = 0
    for d in tenants:
        records = store.owned_groups(d.ref.platform, d.ref.key)
        names += len({r.name for r in records} | {g.name for g in d.groups})
    return names


def owned_groups(store: Store, ref: TenantRef) -> list[OwnedGroup]:
    """The store's records of the tenant's owned groups, as the driver and the planner take them."""
    return [
        OwnedGroup(r.alias, r.name, r.platform_id, r.roles, r.members, r.created_at, r.project_role)
        for r in store.owned_groups(ref.platform, ref.key)
    ]


def begin_run(store: Store, ref: TenantRef) -> int:
    """Record the start of an applying run of the tenant (and the tenant); returns the run's id.
    The run starts when it starts, not at the run's ``now`` (the desired state's time, a whole
    batch's start): the newest run of a tenant is the one that started last, on any replica."""
    run_id = store.start_run(ref.key, ref.platform, dry_run=False)
    store.ensure_tenant(ref.key, ref.platform, ref.local_id)
    return run_id


def end_tenant(
    store: Store,
    ref: TenantRef,
    warnings: Sequence[ReplicationWarning],
    status: str | None,
    now: datetime,
) -> None:
    """After the changes: the tenant's open warnings, and its status unless None (still pending)."""
    store.sync_warnings(ref.key, ref.platform, [(w.code.value, w.subject, w.message) for w in warnings], now)
    if status is not None:
        store.set_tenant_status(ref.key, ref.platform, ref.local_id, status)


def adopt(
    store: Store,
    desired: DesiredTenant,
    observed: ObservedTenant,
    owned: Sequence[OwnedGroup],
    status: str | None = None,
) -> None:
    """Bring the store's records in line with what the platform shows, before anything is
    applied. A change whose answer was lost (a dropped connection, a timeout after the platform
    acted, a crash between the call and the record) left the record behind the platform:

    - groups the driver found by name with our marker are confirmed; vanished ones forgotten;
    - the meshProject role each desired group stands for is recorded (for the deletion guard);
    - a role that is on an owned group and desired for it is recorded as ours (its grant may
      have happened without the answer reaching us), so that it is revoked when unmapped;
    - a recorded role or member the group no longer has is forgotten (its revoke or removal
      happened), so that nobody's later access is mistaken for ours.

    ``status``: the tenant's status to record afterwards (a removed tenant being revoked)."""
    ref = desired.ref
    platform, tenant = ref.platform, ref.key
    known = {o.name: o for o in owned}
    wanted_roles = {g.name: g.roles for g in desired.groups}
    project_roles = {g.name: g.project_role for g in desired.groups}
    for g in observed.groups:
        rec = known.get(g.name)
        if rec is None or rec.platform_id != g.id:
            store.confirm_group(platform, tenant, g.name, g.id, g.alias)
        if project_roles.get(g.name) and (rec is None or rec.project_role != project_roles[g.name]):
            store.set_group_project_role(platform, tenant, g.name, project_roles[g.name])
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
    if status is not None:
        store.set_tenant_status(tenant, platform, ref.local_id, status)


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
