"""Writing SCIM resources: the meshObjects a change produces are validated against the whole
inventory (inventory files, stored objects and the change) before anything is written, then the
SCIM resources are kept. Every write holds the store's objects lock from its reads to its last
write: a create from its checks (userName uniqueness, members), a replace, patch or delete from
its read of the resource it changes (the provider takes the lock around both), so that another
replica changing the same resource or userName at the same moment waits and then sees this one
(no lost update). The meshObjects and the SCIM resources of one request are written in one
transaction: a replica that dies in between leaves neither (no orphan meshUser whose euid would
make every retried create a 409). After a write the daemon is told that stored objects changed."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import structlog

from replicator.sources.scim import mapping
from replicator.sources.scim.errors import ScimError
from replicator.sources.scim.resources import keep

if TYPE_CHECKING:
    from scim2_models import Resource

    from replicator.sources.host import SourceHost
    from replicator.sources.stored import Change
    from state import Store
    from state.store import ScimResource

log = structlog.get_logger("replicator.scim")


def put(
    host: SourceHost, store: Store, rt: str, id: str, obj: Resource[Any], *, locked: bool = False
) -> ScimResource:
    """Validate and write the meshObject ``obj`` maps to, then keep ``obj`` as ``rt`` ``id``.
    ``locked``: the caller holds the store's objects lock (a PATCH or PUT that read the resource
    under it), else it is taken here."""
    with contextlib.nullcontext() if locked else store.objects_lock(), store.transaction():
        saved = _put_locked(host, store, rt, id, obj)
    host.objects_changed()
    return saved


def _put_locked(host: SourceHost, store: Store, rt: str, id: str, obj: Resource[Any]) -> ScimResource:
    from scim2_models import Group, User

    v = host.validated
    attribute = v.config.identity.scim.euid_attribute if v is not None else "userName"
    if rt == "User":
        assert isinstance(obj, User)
        mapping.check_unique_user_name(store, obj, id)
        change = mapping.user_change(id, obj, attribute)
    else:
        assert isinstance(obj, Group)
        change = mapping.group_change(id, obj, mapping.member_users(store, obj))
    write(host, store, change, locked=True)
    return keep(store, rt, id, obj)


def delete(host: SourceHost, store: Store, rt: str, id: str) -> None:
    """Remove ``rt`` ``id``: a User leaves the groups that hold it and its meshUser is
    deprovisioned; a Group's meshUserGroup is deleted. Then the SCIM resource is removed. The
    caller holds the store's objects lock from its read of the resource (If-Match) on: the groups
    read here are the ones written back."""
    from replicator.sources.stored import Change

    with store.transaction():
        if rt == "User":
            change, groups = mapping.user_removal(store, id)
            write(host, store, change, locked=True)
            for gid, g in groups:
                keep(store, "Group", gid, g)
        else:
            write(host, store, Change(mapping.SOURCE, deletes={("meshUserGroup", id)}), locked=True)
        store.put_scim_resources([], deletes=[(rt, id)])
    host.objects_changed()


def write(host: SourceHost, store: Store, change: Change, *, locked: bool = False) -> None:
    """Validate the inventory ``change`` produces, then write it: 409 (``uniqueness``) when it
    would make something not unique or names an object another source owns, 400 for any other
    problem, 503 before a configuration is loaded. ``locked``: the caller holds the store's
    objects lock (it is not re-entrant)."""
    from replicator.inputs.loader import InputError
    from replicator.sources import stored
    from state import ObjectOwnedError

    if host.validated is None:
        raise ScimError(503, "the configuration is not loaded")
    try:
        apply = stored.apply_locked if locked else stored.apply
        apply(host.config_path, store, change, cache=host.loaded_cache)
    except InputError as e:
        detail = "; ".join(str(p) for p in e.problems[:10])
        unique = any("must be unique" in p.message for p in e.problems)
        log.warning("scim change refused", problems=[str(p) for p in e.problems[:10]])
        raise ScimError(409 if unique else 400, detail, "uniqueness" if unique else "invalidValue") from e
    except ObjectOwnedError as e:
        raise ScimError(409, str(e), "uniqueness") from e
