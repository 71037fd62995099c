"""Plan files and snapshots on disk: what ``apply`` and ``plan --observed`` read back (every
problem an :class:`InputError` naming the file), and the driver that plans against a snapshot
without credentials. What the files hold, and how two of them are compared, is
:mod:`replicator.core.planfile`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from platforms.contract import (
    Capabilities,
    Change,
    Driver,
    ObservedTenant,
    OwnedGroup,
    PlatformError,
    PlatformUser,
    TenantRef,
)
from replicator.core.planfile import FORMAT_VERSION, observed_from_doc
from replicator.inputs.loader import InputError, Problem

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
            p: {
                e: tuple(PlatformUser(i, n, "awaitingLogin" in rest) for i, n, *rest in users)
                for e, users in by_euid.items()
            }
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
