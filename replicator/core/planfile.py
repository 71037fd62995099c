"""Plan files and snapshots as data: the digests of the inputs, the observed-state documents, and
the comparisons that name what changed since a plan was made, so that a stale plan is refused.

Pure: plain data in, plain data (and messages naming what changed) out. Reading and writing the
files is :mod:`replicator.engine.artifacts`.

A plan file is the plan JSON (:mod:`replicator.cli.render`) plus an ``artifact`` section:

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
from typing import Any

from platforms.contract import ObservedGroup, ObservedTenant, OwnedGroup, PlatformUser
from replicator.core.config import Config
from replicator.core.inventory import Inventory

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
                "projectRole": o.project_role,
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
            o["alias"],
            o["name"],
            o["platformId"],
            frozenset(o["roles"]),
            frozenset(o.get("members", ())),
            project_role=o.get("projectRole", ""),
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
            p: {
                e: sorted([u.id, u.name, *(["awaitingLogin"] if u.awaiting_login else [])] for u in users)
                for e, users in sorted(by_euid.items())
            }
            for p, by_euid in sorted(lookups.items())
        },
    }
