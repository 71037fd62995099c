"""What a login does, whichever protocol proved it (OIDC, SAML): the meshUser it describes is
created or updated in the state store through ``replicator.sources.stored`` (validated against the
inventory, owned by the login's source), and the answer says what changed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse

from replicator.logs import get_logger

if TYPE_CHECKING:
    from pathlib import Path

    from replicator.sources.stored import LoadedCache
    from state import Store

log = get_logger("replicator.logins")


def changed_fields(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    if old is None:
        return sorted(new.get("spec", {}))
    before, after = old.get("spec", {}) or {}, new.get("spec", {})
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def _located(p: Any) -> dict[str, Any]:
    """A loader Problem as JSON: where (file:line, object, field) and what."""
    where = p.file + (f":{p.line}" if p.line else "")
    return {"where": where, "object": p.obj, "field": p.field, "message": p.message}


def error(status: int, error: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, **extra}, status_code=status)



def write_login(
    config_path: Path,
    store: Store,
    source: str,
    label: str,
    doc: dict[str, Any],
    id_where: str,
    cache: LoadedCache | None = None,
) -> tuple[JSONResponse, bool]:
    """Create or update the meshUser ``doc`` of a verified login of ``source`` (blocking). Returns
    the answer and whether anything was written (then the caller reloads the inventory).
    ``id_where`` names where the user's name came from, for a refused name."""
    from pydantic import ValidationError

    from replicator.core.inventory import MeshUser
    from replicator.inputs.loader import InputError
    from replicator.sources import stored
    from state import ObjectOwnedError

    name = doc["metadata"]["name"]
    try:
        user = MeshUser.model_validate(doc)
    except ValidationError as e:
        problems = [
            {
                "where": id_where
                if err["loc"][:2] == ("metadata", "name")
                else "meshUser " + ".".join(str(x) for x in err["loc"]),
                "message": err["msg"],
            }
            for err in e.errors()
        ]
        return error(422, "the login does not give a valid meshUser", problems=problems), False
    existing = store.get_object("meshUser", name)
    if existing is not None and existing.source != source:
        why = f"meshUser {name!r} is owned by source {existing.source!r}: not changed"
        return error(409, why, owner=existing.source), False
    loaded = stored.current(config_path, store, cache)
    if ("meshUser", name) in loaded.file_keys:
        why = f"meshUser {name!r} is defined in an inventory file: not changed"
        return error(409, why, owner="file"), False
    fields = changed_fields(existing.document if existing else None, doc)
    revived = existing is not None and existing.deprovisioned_at is not None
    euid = doc["spec"]["euid"]
    if existing is not None and not fields and not revived:
        log.info("login", via=label, user=name, changed=[])
        return JSONResponse({"user": name, "euid": euid, "created": False, "changed": False}), False
    change = stored.Change(source, puts=stored.as_loaded([user], label))
    try:
        stored.apply(config_path, store, change, cache=cache)
    except InputError as e:
        return error(
            422,
            "the login's meshUser does not fit the inventory: not changed",
            problems=[_located(p) for p in e.problems],
        ), False
    except ObjectOwnedError as e:
        return error(409, f"not changed: {e}"), False
    log.info("login", via=label, user=name, created=existing is None, changed=fields)
    return JSONResponse(
        {"user": name, "euid": euid, "created": existing is None, "changed": True},
        status_code=201 if existing is None else 200,
    ), True
