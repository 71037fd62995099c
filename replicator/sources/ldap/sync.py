"""One sync of an LDAP connector into the state store, and the lease under which one replica at a
time runs it.

Only a COMPLETE read changes anything: a read that fails writes nothing and deprovisions nobody,
and the sync is recorded ``failed``. After a complete read, users of this source that were not
read are deprovisioned (kept, out of the inventory) and groups of this source that were not read
are deleted, except groups a binding still names: those are kept without members. A complete read
with no users is refused unless ``allowEmpty``. Everything is written in one change through
``replicator.sources.stored.apply`` under the source ``ldap:<name>``; a change that would not
validate, or that the store refuses, writes nothing either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from replicator.core.config import LdapConnector
from replicator.core.inventory import GroupSubject, MeshProjectBinding, MeshUser, MeshUserGroup, fold
from replicator.logs import get_logger
from replicator.sources.ldap.directory import PageHook, SyncError, read_directory
from replicator.sources.ldap.mapping import Existing, Mapped, Skipped, map_directory, mesh_user_group
from state import Store, StoreError

if TYPE_CHECKING:
    from replicator.inputs.loader import InputError, Loaded
    from state import StoredObject

log = get_logger("replicator.sources.ldap")


@dataclass
class SyncResult:
    connector: str
    outcome: str = "failed"
    """``complete`` or ``failed`` (nothing written)."""
    error: str | None = None
    users_read: int = 0
    groups_read: int = 0
    users: int = 0
    """Users written (created, updated or unchanged)."""
    groups: int = 0
    deprovisioned: list[str] = field(default_factory=list)
    deleted_groups: list[str] = field(default_factory=list)
    emptied_groups: list[str] = field(default_factory=list)
    """Groups the directory no longer has but a binding still names: kept without members."""
    skipped: list[Skipped] = field(default_factory=list)
    revision_before: int = 0
    revision_after: int = 0

    @property
    def source(self) -> str:
        return f"ldap:{self.connector}"

    @property
    def ok(self) -> bool:
        return self.outcome == "complete"

    @property
    def changed(self) -> bool:
        return self.revision_after != self.revision_before

    def as_json(self) -> dict[str, object]:
        return {
            "connector": self.connector,
            "source": self.source,
            "outcome": self.outcome,
            "error": self.error,
            "usersRead": self.users_read,
            "groupsRead": self.groups_read,
            "users": self.users,
            "groups": self.groups,
            "deprovisioned": self.deprovisioned,
            "deletedGroups": self.deleted_groups,
            "emptiedGroups": self.emptied_groups,
            "skipped": [s.as_json() for s in self.skipped],
            "revision": self.revision_after,
            "changed": self.changed,
        }

    def summary(self) -> str:
        if not self.ok:
            return f"ldap {self.connector}: sync failed, nothing changed: {self.error}"
        return (
            f"ldap {self.connector}: {self.users} users, {self.groups} groups written; "
            f"{len(self.deprovisioned)} deprovisioned, {len(self.deleted_groups)} groups deleted, "
            f"{len(self.skipped)} entries left out"
        )


@dataclass(frozen=True)
class _Retired:
    """What a complete read no longer has, among the objects this source wrote before."""

    deprovisions: set[tuple[str, str]]
    """Users not read: deprovisioned (kept, out of the inventory)."""
    deletes: set[tuple[str, str]]
    """Groups not read that no binding names: deleted."""
    emptied: list[MeshUserGroup]
    """Groups not read that a binding still names: kept without members."""


def sync(
    connector: LdapConnector,
    config_path: Path,
    store: Store,
    *,
    on_page: PageHook | None = None,
) -> SyncResult:
    """One complete sync of ``connector`` into ``store``, or a failed one that changed nothing.
    The outcome is recorded with ``store.start_sync/finish_sync`` under ``ldap:<name>``."""
    from replicator.inputs.loader import InputError, load
    from replicator.sources import stored

    result = SyncResult(connector.name)
    source = result.source
    result.revision_before = result.revision_after = store.objects_revision()
    store.start_sync(source)
    try:
        directory = read_directory(connector, on_page)
    except SyncError as e:
        return _fail(store, result, str(e))
    result.users_read = len(directory.users)
    result.groups_read = len(directory.groups or [])
    if not directory.users and not connector.allow_empty:
        return _fail(
            store,
            result,
            f"the directory returned no users (userBase {connector.user_base}, userFilter "
            f"{connector.user_filter}): refused, nobody deprovisioned (set allowEmpty: true to accept)",
        )
    try:
        loaded = load(config_path, store)
    except InputError as e:
        return _fail(store, result, _problems(e))
    everything = store.list_objects(include_deprovisioned=True)
    mine = [o for o in everything if o.source == source]
    mapped = map_directory(connector, directory, _existing(source, loaded, everything, mine))
    for s in mapped.skipped:
        log.warning("ldap entry left out", connector=connector.name, dn=s.dn, name=s.name, reason=s.reason)
    retired = _retired(connector, mine, mapped, _group_refs(loaded))
    emptied_ids = {
        ("meshUserGroup", g.metadata.name): _external_id(mine, g.metadata.name) for g in retired.emptied
    }
    change = stored.Change(
        source,
        puts=stored.as_loaded([*mapped.users, *mapped.groups, *retired.emptied], source),
        deletes=retired.deletes,
        deprovisions=retired.deprovisions,
        external_ids={**mapped.external_ids, **emptied_ids},
    )
    try:
        _, revision = stored.apply(config_path, store, change)
    except InputError as e:
        return _fail(store, result, "the change would not validate: " + _problems(e))
    except StoreError as e:  # ObjectOwnedError too: an object another source owns
        return _fail(store, result, str(e))
    return _complete(store, result, mapped, retired, revision)


def _fail(store: Store, result: SyncResult, error: str) -> SyncResult:
    """Record the sync ``failed`` with ``error``: nothing was written."""
    result.outcome, result.error = "failed", error
    result.revision_after = store.objects_revision()
    log.error("ldap sync failed, nothing changed", connector=result.connector, error=error)
    store.finish_sync(
        result.source, "failed", users=result.users_read, groups=result.groups_read, error=error
    )
    return result


def _complete(
    store: Store, result: SyncResult, mapped: Mapped, retired: _Retired, revision: int
) -> SyncResult:
    """Record the sync ``complete``: the change is written as ``revision``."""
    result.outcome = "complete"
    result.revision_after = revision
    result.users, result.groups = len(mapped.users), len(mapped.groups)
    result.deprovisioned = sorted(k for _, k in retired.deprovisions)
    result.deleted_groups = sorted(k for _, k in retired.deletes)
    result.emptied_groups = sorted(g.metadata.name for g in retired.emptied)
    result.skipped = mapped.skipped
    deprovisioned = len(retired.deprovisions)
    store.finish_sync(
        result.source, "complete", users=result.users, groups=result.groups, deprovisioned=deprovisioned
    )
    log.info(
        "ldap sync complete",
        connector=result.connector,
        users=result.users,
        groups=result.groups,
        deprovisioned=deprovisioned,
        deleted_groups=len(retired.deletes),
        left_out=len(mapped.skipped),
        revision=revision,
    )
    return result


def _existing(
    source: str, loaded: Loaded, everything: list[StoredObject], mine: list[StoredObject]
) -> Existing:
    """What the mapping must respect: the objects of the inventory files, the owner of every
    stored object, the euids of this source's stored users and the euids of every other user."""
    owners = {(o.kind, o.key): o.source for o in everything}
    stored_euids: dict[str, str] = {}
    for o in mine:
        spec = o.document.get("spec")
        euid = spec.get("euid") if isinstance(spec, dict) else None
        if o.kind == "meshUser" and isinstance(euid, str):
            stored_euids[fold(euid)] = o.key
    foreign_euids: dict[str, str] = {}
    for lo in loaded.objects:
        obj = lo.obj
        if isinstance(obj, MeshUser) and obj.spec.euid:
            key = ("meshUser", str(obj.metadata.name))
            if owners.get(key) != source or key in loaded.file_keys:
                foreign_euids[fold(obj.spec.euid)] = lo.label
    return Existing(source, loaded.file_keys, owners, foreign_euids, stored_euids)


def _group_refs(loaded: Loaded) -> dict[str, str]:
    """Every group a meshProjectBinding names -> the first binding that names it."""
    refs: dict[str, str] = {}
    for lo in loaded.objects:
        if isinstance(lo.obj, MeshProjectBinding):
            for subject in lo.obj.spec.subjects:
                if isinstance(subject, GroupSubject):
                    refs.setdefault(subject.group, lo.label)
    return refs


def _retired(
    connector: LdapConnector, mine: list[StoredObject], mapped: Mapped, group_refs: dict[str, str]
) -> _Retired:
    """The users to deprovision, the groups to delete and the groups to keep without members.
    Without ``groupBase`` no group is read: the groups this connector wrote before go too."""
    deprovisions = {
        ("meshUser", o.key)
        for o in mine
        if o.kind == "meshUser" and o.deprovisioned_at is None and o.key not in mapped.read_users
    }
    deletes: set[tuple[str, str]] = set()
    emptied: list[MeshUserGroup] = []
    for o in mine:
        if o.kind != "meshUserGroup" or o.key in mapped.read_groups:
            continue
        if o.key in group_refs:
            emptied.append(mesh_user_group(o.key, []))
            log.warning(
                "ldap group gone but still bound: kept without members",
                connector=connector.name,
                group=o.key,
                binding=group_refs[o.key],
            )
        else:
            deletes.add(("meshUserGroup", o.key))
    return _Retired(deprovisions, deletes, emptied)


def _external_id(objects: Iterable[StoredObject], key: str) -> str:
    """The external id the stored meshUserGroup ``key`` has ("" when none)."""
    for o in objects:
        if o.kind == "meshUserGroup" and o.key == key:
            return str(o.external_id or "")
    return ""


def _problems(e: InputError) -> str:
    """The first five problems of ``e`` in one line."""
    problems = [str(p) for p in e.problems]
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return "; ".join(problems[:5]) + more


def lease_name(connector: LdapConnector) -> str:
    return f"ldap-sync:{connector.name}"


def sync_with_lease(
    connector: LdapConnector,
    config_path: Path,
    store: Store,
    holder: str,
    *,
    on_page: PageHook | None = None,
) -> SyncResult | None:
    """``sync`` while holding the lease ``ldap-sync:<name>`` (one replica syncs at a time); None
    when another holder has it. The lease is released at the end, whatever the outcome."""
    ttl = timedelta(seconds=max(120.0, 4 * connector.timeout))
    name = lease_name(connector)
    token = store.acquire_lease(name, holder, ttl)
    if token is None:
        log.info(
            "another replica is syncing this connector",
            connector=connector.name,
            holder=store.lease_holder(name),
        )
        return None

    def renew(what: str, page: int) -> None:
        # Every page extends the lease; a lease lost meanwhile (another replica took it after it
        # expired) fails this read, so two replicas never both write a sync.
        if not store.renew_lease(name, holder, token, ttl):
            raise SyncError(f"lost the lease {name} while reading {what} (page {page})")
        if on_page is not None:
            on_page(what, page)

    try:
        return sync(connector, config_path, store, on_page=renew)
    finally:
        try:
            store.release_lease(name, holder, token)
        except StoreError as e:
            log.error("cannot release the ldap sync lease", connector=connector.name, error=str(e))
