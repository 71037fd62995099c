"""Plan artifacts and snapshots: what ``plan --out`` and ``snapshot`` write, what ``apply`` and
``plan --observed`` read back, and the comparisons that refuse a stale plan (CONTRACT section 7).

Pure: plain data in, plain data (and messages naming what changed) out.

A plan artifact is the plan JSON (:mod:`replicator.render`) plus an ``artifact`` section:

* ``inputs``: a digest of every config section and inventory object the plans were computed from
  (``"platform aws.eu-central-1"``, ``"meshUser alice"``, ``"bindings of finance/ledger"``, ...), so
  that ``apply`` can name exactly which input changed since;
* ``observed``: per tenant, the observed state of its owned groups (ids, members, roles, names taken
  by foreign groups) and the state store's records, so that ``apply`` can name what changed on the
  platform since (the per-tenant ``fingerprint`` is the hash of the same data);
* ``allowDeletions``: whether the plan was made past the deletion guard.

A snapshot has the same ``observed`` documents plus the user lookups of every tenant, and nothing
else: ``plan --observed`` plans against it without credentials.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from platforms.contract import (
    Capabilities,
    Change,
    Driver,
    ObservedGroup,
    ObservedTenant,
    OwnedGroup,
    PlatformError,
    PlatformUser,
    TenantRef,
)
from replicator.config import Config
from replicator.inventory import Inventory
from replicator.loader import InputError, Problem

FORMAT_VERSION = 1
MAX_LISTED = 10
"""Differences named one by one before the rest is summarised as a count."""


def _digest(data: Any) -> str:
    raw = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def input_digests(config: Config, inventory: Inventory) -> dict[str, str]:
    """A digest per config section and per inventory object that plans depend on. The daemon's
    ``schedule`` and ``api`` sections do not change a plan and are left out."""

    def dump(model: Any) -> Any:
        return model.model_dump(mode="json", by_alias=True)

    out = {
        "config: state": _digest(config.state),
        "config: replication": _digest(dump(config.replication)),
    }
    out |= {f"platform {p.identifier}": _digest(dump(p)) for p in config.platforms}
    out |= {f"landing zone {z.identifier}": _digest(dump(z)) for z in config.landing_zones}
    out |= {f"meshUser {k}": _digest(dump(v)) for k, v in inventory.users.items()}
    out |= {f"meshUserGroup {k}": _digest(dump(v)) for k, v in inventory.groups.items()}
    out |= {f"meshWorkspace {k}": _digest(dump(v)) for k, v in inventory.workspaces.items()}
    out |= {f"meshProject {w}/{p}": _digest(dump(v)) for (w, p), v in inventory.projects.items()}
    out |= {f"meshTenant {k}": _digest(dump(v)) for k, v in inventory.tenants.items()}
    out |= {
        f"bindings of {w}/{p}": _digest([dump(b) for b in bs])
        for (w, p), bs in inventory.bindings_by_project.items()
    }
    return dict(sorted(out.items()))


def diff_inputs(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """What changed between two :func:`input_digests`, one line per object."""
    lines = [f"{k}: removed" for k in recorded if k not in current]
    lines += [f"{k}: added" for k in current if k not in recorded]
    lines += [f"{k}: changed" for k in recorded if k in current and recorded[k] != current[k]]
    return sorted(lines)


# --- observed state ---------------------------------------------------------------------------


def observed_doc(observed: ObservedTenant, owned: Sequence[OwnedGroup]) -> dict[str, Any]:
    """The observation of one tenant and the store's records of it, as JSON-ready data."""
    return {
        "groups": [
            {
                "name": g.name,
                "id": g.id,
                "alias": g.alias,
                "members": sorted([u.id, u.name] for u in g.members),
                "roles": sorted(g.roles),
            }
            for g in sorted(observed.groups, key=lambda g: g.name)
        ],
        "vanished": sorted(observed.vanished),
        "foreign": dict(sorted(observed.foreign.items())),
        "owned": [
            {
                "alias": o.alias,
                "name": o.name,
                "platformId": o.platform_id,
                "roles": sorted(o.roles),
                "members": sorted(o.members),
            }
            for o in sorted(owned, key=lambda o: o.name)
        ],
    }


def observed_from_doc(doc: Mapping[str, Any]) -> tuple[ObservedTenant, tuple[OwnedGroup, ...]]:
    """The inverse of :func:`observed_doc` (for plans against a snapshot)."""
    groups = tuple(
        ObservedGroup(
            id=g["id"],
            name=g["name"],
            alias=g["alias"],
            members=frozenset(PlatformUser(i, n) for i, n in g["members"]),
            roles=frozenset(g["roles"]),
        )
        for g in doc["groups"]
    )
    owned = tuple(
        OwnedGroup(
            o["alias"], o["name"], o["platformId"], frozenset(o["roles"]), frozenset(o.get("members", ()))
        )
        for o in doc["owned"]
    )
    return ObservedTenant(groups, tuple(doc["vanished"]), dict(doc["foreign"])), owned


def diff_observed(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What changed on the platform (or in the store's records) between two :func:`observed_doc`."""
    lines: list[str] = []
    old = {g["name"]: g for g in recorded.get("groups", [])}
    new = {g["name"]: g for g in current.get("groups", [])}
    for name in sorted(old.keys() - new.keys()):
        lines.append(f"group {name}: gone")
    for name in sorted(new.keys() - old.keys()):
        lines.append(f"group {name}: appeared")
    for name in sorted(old.keys() & new.keys()):
        a, b = old[name], new[name]
        if a["id"] != b["id"]:
            lines.append(f"group {name}: replaced (id {a['id']} -> {b['id']})")
        a_members = {tuple(m) for m in a["members"]}
        b_members = {tuple(m) for m in b["members"]}
        lines += [f"group {name}: member {n} added" for _, n in sorted(b_members - a_members)]
        lines += [f"group {name}: member {n} removed" for _, n in sorted(a_members - b_members)]
        lines += [f"group {name}: role {r} added" for r in sorted(set(b["roles"]) - set(a["roles"]))]
        lines += [f"group {name}: role {r} removed" for r in sorted(set(a["roles"]) - set(b["roles"]))]
    for name in sorted(set(current.get("vanished", [])) - set(recorded.get("vanished", []))):
        lines.append(f"group {name}: deleted outside the replicator")
    old_foreign, new_foreign = recorded.get("foreign", {}), current.get("foreign", {})
    for name in sorted(new_foreign.keys() - old_foreign.keys()):
        lines.append(f"group name {name}: now taken by a group that is not ours")
    for name in sorted(old_foreign.keys() - new_foreign.keys()):
        lines.append(f"group name {name}: no longer taken by a foreign group")
    if recorded.get("owned") != current.get("owned") and not lines:
        lines.append("the state store's records of owned groups changed (another run applied changes)")
    return lines


def summarise(lines: Sequence[str], limit: int = MAX_LISTED) -> list[str]:
    """At most ``limit`` lines, then one that counts the rest."""
    if len(lines) <= limit:
        return list(lines)
    return [*lines[:limit], f"... and {len(lines) - limit} more"]


def diff_changes(recorded: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]]) -> list[str]:
    """Changes only one of two plans of the same tenant has (JSON change documents)."""

    def key(c: Mapping[str, Any]) -> str:
        return json.dumps(c, sort_keys=True)

    def text(c: Mapping[str, Any]) -> str:
        subject = c.get("platformUser") or c.get("role") or c.get("euid") or ""
        return f"{c['action']} {c['group']} {subject}".rstrip()

    old = {key(c): c for c in recorded}
    new = {key(c): c for c in current}
    lines = [f"no longer planned: {text(old[k])}" for k in old if k not in new]
    lines += [f"newly planned: {text(new[k])}" for k in new if k not in old]
    return lines


# --- files ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantArtifact:
    key: str
    platform: str
    local_id: str
    fingerprint: str
    changes: tuple[dict[str, Any], ...]
    withheld: tuple[dict[str, Any], ...]
    observed: dict[str, Any]


@dataclass(frozen=True)
class PlanArtifact:
    path: Path
    inputs: dict[str, str]
    allow_deletions: bool
    created_at: str
    tenants: tuple[TenantArtifact, ...]
    errors: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Snapshot:
    path: Path
    created_at: str
    tenants: dict[str, dict[str, Any]]
    """Tenant key -> its ``observed`` document (see :func:`observed_doc`)."""
    lookups: dict[str, dict[str, tuple[PlatformUser, ...]]]
    """Platform identifier -> transformed euid -> the platform users it matched."""


def _read_json(path: Path, what: str) -> dict[str, Any]:
    def bad(message: str, line: int | None = None) -> InputError:
        return InputError([Problem(str(path), line, None, None, message)])

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise bad(f"cannot read the {what}: {e.strerror or e}") from e
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise bad(f"not a {what} (invalid JSON: {e.msg})", e.lineno) from e
    except UnicodeDecodeError as e:
        raise bad(f"not a {what} (not UTF-8 text)") from e
    if not isinstance(doc, dict):
        raise bad(f"not a {what} (a JSON object is expected)")
    if doc.get("formatVersion") != FORMAT_VERSION:
        raise bad(
            f"not a {what} this version reads (formatVersion {doc.get('formatVersion')!r}, "
            f"expected {FORMAT_VERSION})"
        )
    return doc


def _malformed(path: Path, what: str, error: Exception) -> InputError:
    return InputError([Problem(str(path), None, None, None, f"a malformed {what}: {error}")])


def read_plan_artifact(path: Path) -> PlanArtifact:
    """Read ``plan --out``; every problem is an :class:`InputError` naming the file."""
    doc = _read_json(path, "plan file")
    meta = doc.get("artifact")
    if not isinstance(meta, dict):
        raise InputError(
            [
                Problem(
                    str(path),
                    None,
                    None,
                    "artifact",
                    "a plan printed with -o json, not a plan file: "
                    "write one with `replicator plan --out FILE`",
                )
            ]
        )
    try:
        observed = meta["observed"]
        tenants = tuple(
            TenantArtifact(
                key=t["tenant"],
                platform=t["platform"],
                local_id=t["localId"],
                fingerprint=t["fingerprint"],
                changes=tuple(t["changes"]),
                withheld=tuple(t["withheld"]),
                observed=observed[t["tenant"]],
            )
            for t in doc["tenants"]
        )
        return PlanArtifact(
            path=path,
            inputs=dict(meta["inputs"]),
            allow_deletions=bool(meta["allowDeletions"]),
            created_at=str(meta["createdAt"]),
            tenants=tenants,
            errors=tuple((e["tenant"], e["error"]) for e in doc.get("errors", [])),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise _malformed(path, "plan file", e) from e


def artifact_section(
    inputs: Mapping[str, str],
    allow_deletions: bool,
    created_at: str,
    observed: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """The ``artifact`` section ``plan --out`` adds to the plan JSON."""
    return {
        "createdAt": created_at,
        "allowDeletions": allow_deletions,
        "inputs": dict(inputs),
        "observed": dict(observed),
    }


def snapshot_doc(
    created_at: str,
    tenants: Mapping[str, Mapping[str, Any]],
    lookups: Mapping[str, Mapping[str, Iterable[PlatformUser]]],
) -> dict[str, Any]:
    return {
        "formatVersion": FORMAT_VERSION,
        "kind": "snapshot",
        "createdAt": created_at,
        "tenants": dict(sorted(tenants.items())),
        "lookups": {
            p: {e: sorted([u.id, u.name] for u in users) for e, users in sorted(by_euid.items())}
            for p, by_euid in sorted(lookups.items())
        },
    }


def read_snapshot(path: Path) -> Snapshot:
    doc = _read_json(path, "snapshot")
    if doc.get("kind") != "snapshot":
        raise InputError(
            [Problem(str(path), None, None, "kind", "not a snapshot: write one with `replicator snapshot`")]
        )
    try:
        tenants = {k: dict(v) for k, v in doc["tenants"].items()}
        for k, v in tenants.items():
            observed_from_doc(v)  # checks the shape now, not in the middle of a plan
            if not isinstance(v.get("platform"), str):
                raise ValueError(f"tenant {k}: no platform")
        lookups = {
            p: {e: tuple(PlatformUser(i, n) for i, n in users) for e, users in by_euid.items()}
            for p, by_euid in doc["lookups"].items()
        }
        return Snapshot(path, str(doc["createdAt"]), tenants, lookups)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise _malformed(path, "snapshot", e) from e


# --- plans against a snapshot -----------------------------------------------------------------

UNRESOLVED_PREFIX = "unresolved:"
"""Platform user id given to an euid the snapshot has no lookup for (see :class:`SnapshotDriver`)."""
NOT_IN_SNAPSHOT = "not in the snapshot: looked up when applied"


class SnapshotDriver(Driver):
    """Answers ``lookup_users`` and ``observe`` from a snapshot, for ``plan --observed``: no
    credentials, no network. It never applies anything.

    An euid the snapshot has no lookup for (a user added since it was taken) is answered with a
    placeholder user (id ``unresolved:<euid>``) rather than "not found": the plan then shows the
    member being added, marked :data:`NOT_IN_SNAPSHOT`, which is what a live plan shows when the
    user exists. A tenant the snapshot does not hold is observed as new (nothing owned)."""

    capabilities: ClassVar[Capabilities] = Capabilities(external_grants_default="keep", lookup_attribute="")
    options_model: ClassVar[type[BaseModel]] = BaseModel

    def __init__(self, identifier: str, snapshot: Snapshot, ensures_users: bool) -> None:
        super().__init__(identifier, None)
        self.snapshot = snapshot
        self._ensures = ensures_users
        self.unresolved: set[str] = set()
        self.unknown_tenants: set[str] = set()

    @property
    def ensures_users(self) -> bool:
        return self._ensures

    async def lookup_users(self, euids: Sequence[str]) -> dict[str, tuple[PlatformUser, ...]]:
        known = self.snapshot.lookups.get(self.identifier, {})
        out: dict[str, tuple[PlatformUser, ...]] = {}
        for e in euids:
            if e in known:
                out[e] = known[e]
            else:
                self.unresolved.add(e)
                out[e] = (PlatformUser(UNRESOLVED_PREFIX + e, e),)
        return out

    async def observe(
        self, tenant: TenantRef, owned: Sequence[OwnedGroup], desired_names: Mapping[str, str]
    ) -> ObservedTenant:
        doc = self.snapshot.tenants.get(tenant.key)
        if doc is None:
            self.unknown_tenants.add(tenant.key)
            return ObservedTenant()
        observed, _ = observed_from_doc(doc)
        return observed

    async def apply(self, tenant: TenantRef, change: Change, group_id: str | None) -> str | None:
        raise PlatformError("a plan against a snapshot cannot be applied")
