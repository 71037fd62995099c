"""Reloading the daemon's config and inventory without holding up its event loop.

What is slow happens in a worker thread (:func:`prepare`): reading the files and the stored
objects, validating the whole inventory, opening the store the first time, compiling each tenant
to find the ones whose desired state changed, listing the removed ones. What it found is applied
on the loop by the daemon (the new inventory swapped in, changed tenants queued): quick, and
never half-done while a worker looks.

Reloads are coalesced (:class:`Reloads`): at most one runs at a time, and any number of requests
that arrive while one runs (a burst of SCIM writes) make exactly one more after it, which sees all
of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from replicator.core.affected import touched_tenants
from replicator.core.compile import compile_tenant
from replicator.core.config import SecretRef
from replicator.core.model import DesiredTenant
from replicator.engine.runner import Engine
from replicator.inputs.loader import (
    InputError,
    Loaded,
    Problem,
    changed_objects,
    field_path,
    input_stamps,
    load,
    open_state,
)
from replicator.inputs.revise import Checked
from replicator.inputs.validate import Validated, validate
from replicator.logs import get_logger
from replicator.memory import bulk
from replicator.sources.stored import LoadedCache, cached
from state import Store, StoreError

log = get_logger("replicator.service.daemon")


@dataclass
class Reloaded:
    """What one reload found (in a worker thread), for the daemon to apply on its loop."""

    stamps: dict[str, int]
    """The watched inputs as they were read (see :func:`watched`)."""
    validated: Validated | None = None
    checked: Checked | None = None
    """What ``validated`` was built from (with the stored objects' revision it matches)."""
    error: InputError | None = None
    """Why the input is invalid (``validated`` is then None)."""
    store: Store | None = None
    """The store, opened now when the daemon had none."""
    changed: list[str] = field(default_factory=list)
    """Tenants whose desired state, platform or replication settings changed (all, the first time)."""
    removed: dict[str, DesiredTenant] = field(default_factory=dict)


def prepare(
    config_path: Path,
    store: Store | None,
    previous: Validated | None,
    now: datetime,
    cache: LoadedCache | None = None,
    *,
    freeze: bool = False,
) -> Reloaded:
    """Load and validate the config and inventory and compare them with ``previous`` (blocking: run
    it in a worker thread). A broken input comes back as ``error``; a store that cannot be opened
    raises StoreError. ``cache``: the inventory this process last read or wrote, used instead of
    reading files and store when it is still theirs (a reload after this replica's own SCIM write).
    ``freeze``: after a full read, take the heap out of the cyclic collector's scans (see
    :func:`settle_heap`; for the daemon's own process)."""
    stamps = watched(config_path, previous, store)
    suspects: list[Any] | None = None  # the objects that may have changed (None: any)
    try:
        checked = cached(store, cache)  # this replica's own write: validated already
        if checked is None:
            last = cache.latest() if cache is not None else None  # its unchanged files are reused
            loaded = load(config_path, store, last.loaded if last is not None else None)
            checked = Checked(loaded, validate(loaded))
            with bulk():  # the indexes a reload compares with; millions of entries at 100k tenants
                checked.validated.inventory.build_indexes()
            if last is not None and last.validated is previous:
                suspects = changed_objects(last.loaded, loaded)
            checked.index()  # built here, not by the first identity write that checks against it
            if freeze:
                settle_heap()
    except InputError as e:
        return Reloaded(stamps, error=e)
    unreadable = unreadable_secrets(checked.loaded)
    if unreadable:
        return Reloaded(stamps, error=InputError(unreadable))
    validated = checked.validated
    if store is None:
        store = open_state(validated.config, config_path)
    # Inputs the new config watches and the old did not (a new inventory file) are read now; the
    # others keep the stamp read before loading, so a change made meanwhile reloads once more.
    stamps = {k: stamps.get(k, v) for k, v in watched(config_path, validated, store).items()}
    return Reloaded(
        stamps,
        validated,
        checked,
        store=store,
        changed=changed_tenants(previous, validated, now, suspects),
        removed=removed_tenants(validated, store),
    )


YOUNG_COLLECTION = 100_000
"""Allocations between two collections of the youngest generation in the daemon's process
(Python's default: 700)."""


def tune_collector() -> None:
    """The daemon's process: collect the young generation every ``YOUNG_COLLECTION`` allocations
    instead of every 700. A write of an identity source makes new containers of the inventory's
    size (the users by name, the objects in order: 100,000 entries each with 100,000 users), and
    each collection that finds them young walks every entry; at Python's default that happened
    several times per write (with 100,000 stored users a SCIM Group PATCH took 67 ms at the
    median, 42 ms with this). Most of a write's objects are freed by reference counting before the
    next collection."""
    gc.set_threshold(YOUNG_COLLECTION, 10, 10)


def unreadable_secrets(loaded: Loaded) -> list[Problem]:
    """The daemon's own secrets that cannot be read now, located in the config: an API key's and
    the SCIM bearer token. A key whose secret is missing would refuse every caller without a word;
    the daemon reports the config as invalid instead (not ready, ``configError``), and keeps the
    last good one on a reload. ``replicator validate`` does not check them: CI has no secrets."""
    config, source = loaded.config, loaded.config_source
    named: list[tuple[list[str | int], str, SecretRef]] = [
        (["api", "keys", i, "secret"], f"api key {k.name}", k.secret) for i, k in enumerate(config.api.keys)
    ]
    scim = config.identity.scim
    if scim.enabled and scim.token is not None:
        named.append((["identity", "scim", "token"], "identity.scim", scim.token))
    problems = []
    for path, what, secret in named:
        try:
            secret.resolve()
        except ValueError as e:
            problems.append(
                Problem(source.file, source.line(path), what, field_path(path), f"cannot be read: {e}")
            )
    return problems


def settle_heap() -> None:
    """The inventory just read lives until the next full reload, and with 100,000 users it is
    millions of objects that each full pass of Python's cyclic collector would walk again. The
    young generations are collected, then everything alive is frozen (``gc.freeze``): the
    collector skips it from now on. An inventory holds no reference cycles, so what it frees
    later is freed by reference counting; the cost is that cyclic garbage in the old generation
    at this moment is kept (little: it is collected young)."""
    gc.collect(1)
    gc.freeze()


def watched(config_path: Path, validated: Validated | None, store: Store | None) -> dict[str, int]:
    """A fingerprint of the inputs (blocking): the config and inventory files' modification times
    and the stored objects' revision (objects the API or an identity source wrote, on any replica)."""
    stamps = input_stamps(config_path, validated.config if validated is not None else None)
    if validated is not None and validated.config.stored_objects and store is not None:
        with contextlib.suppress(StoreError):
            stamps["<stored objects>"] = store.objects_revision()
    return stamps


def changed_tenants(
    old: Validated | None, new: Validated, now: datetime, suspects: list[Any] | None = None
) -> list[str]:
    """The tenants of ``new`` whose desired state, platform or replication settings differ from
    ``old``'s (all, the first time). Only those an inventory change touches are compiled (see
    :func:`~replicator.core.affected.touched_tenants`; ``suspects``: the objects that may have
    changed, None: any); every tenant when the config changed."""
    tenants, caps = new.inventory.tenants, new.capabilities
    if old is None:
        return sorted(k for k, t in tenants.items() if t.metadata.platform_identifier in caps)
    if old.config == new.config and old.capabilities == caps:
        candidates: Iterable[str] = touched_tenants(old.inventory, new.inventory, suspects)
    else:
        candidates = tenants
    keys = [k for k in candidates if k in tenants and tenants[k].metadata.platform_identifier in caps]
    return sorted(
        key
        for key in keys
        if key not in old.inventory.tenants or _desired(old, key, now) != _desired(new, key, now)
    )


def _desired(v: Validated, key: str, now: datetime) -> Any:
    tenant = v.inventory.tenants[key]
    platform = tenant.metadata.platform_identifier
    if platform not in v.capabilities:
        return None
    return (
        compile_tenant(v.config, v.inventory, tenant, v.capabilities[platform], now),
        v.config.platform(platform),
        v.config.replication,
    )


def removed_tenants(validated: Validated, store: Store) -> dict[str, DesiredTenant]:
    """Tenants removed from the inventory that their platform's ``deleteRemovedTenants`` lets the
    daemon delete (it never passes ``--allow-deletions`` on its own). Blocking (reads the store);
    a store error is logged and nothing is deleted."""
    try:
        to_delete, held = Engine(validated, store).removed_tenants({})
    except StoreError as e:
        log.error("cannot list the tenants of the state store", error=str(e))
        return {}
    for key, (_, why) in held.items():
        log.info("removed tenant left alone", tenant=key, reason=why)
    return to_delete


class Reloads:
    """Coalesced reloads: :meth:`request` starts ``run`` unless it runs already; requests made while
    it runs make exactly one more run after it. Call :meth:`request` on the event loop."""

    def __init__(self, run: Callable[[], Awaitable[object]]) -> None:
        self._run = run
        self._wanted = False
        self._task: asyncio.Task[None] | None = None
        self.runs = 0
        """Reloads finished (or failed) so far."""

    @property
    def busy(self) -> bool:
        """A reload runs or is about to."""
        return self._task is not None and not self._task.done()

    def request(self) -> None:
        self._wanted = True
        if not self.busy:
            self._task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        while self._wanted:
            self._wanted = False
            try:
                await self._run()
            except Exception:  # a bug or a store that cannot be opened: logged, the next change retries
                log.exception("reload failed")
            finally:
                self.runs += 1

    async def settled(self) -> None:
        """Return once no reload runs or is wanted (those requested before the call included)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
