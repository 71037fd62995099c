"""The meshObject API of the daemon (``/api/meshobjects``): read every object (files and state
store), write and delete stored objects, all or nothing, validated exactly like ``replicator
validate`` validates files.

Writes go through :mod:`replicator.sources.stored` (source ``api``); objects defined in an inventory
file are read-only here (409), objects another identity source owns need the ``admin`` scope
(take-over).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from replicator.core.inventory import KINDS, object_document, object_key
from replicator.inputs.loader import STORE_FILE, LoadedObject, Problem, load
from replicator.sources import apiauth
from replicator.sources.bodies import read_body
from replicator.sources.objects_api.http import (
    JSON_TYPE,
    REQUEST,
    SOURCE,
    YAML_TYPES,
    Refused,
    WriteOutcome,
    error_answer,
    in_thread,
    log,
    media_type,
    object_id,
    object_ref,
    owned_answer,
    parse_body,
    problems_answer,
    unknown_query,
    wants_yaml,
)

if TYPE_CHECKING:
    from replicator.sources.host import SourceHost
    from state import Store


def routes(host: SourceHost) -> list[BaseRoute]:
    return ObjectsApi(host).routes()


class ObjectsApi:
    """The routes of ``/api/meshobjects``, served for one :class:`SourceHost` (the daemon)."""

    def __init__(self, host: SourceHost) -> None:
        self.host = host
        self.write_lock = asyncio.Lock()
        """One write at a time on this replica, so requests queue here rather than on the store's
        objects lock (which serialises validation and write across replicas and processes)."""

    async def guard(self, request: Request, scope: str) -> apiauth.Caller | Response:
        caller = await apiauth.authorize(request, scope, self.host.identify)
        if isinstance(caller, Response):
            return caller
        if self.host.validated is None:
            return error_answer(503, "the daemon has no valid config loaded")
        if not self.host.validated.config.stored_objects:
            return error_answer(
                409,
                "the object API needs stored meshObjects: set storedObjects: true in the config "
                "(the inventory does not read stored objects now)",
            )
        if self.host.store is None:
            return error_answer(503, "the state store is not open")
        return caller

    def store(self) -> Store:
        assert self.host.store is not None  # see guard
        return self.host.store

    def limits(self) -> tuple[int, int]:
        api = self.host.validated.config.api if self.host.validated is not None else None
        return (api.max_request_bytes, api.max_request_objects) if api else (5_000_000, 5000)

    # --- reading -------------------------------------------------------------------------------

    def collect(self, kind: str | None, source: str) -> list[dict[str, Any]]:
        """Objects as API items: file objects (read-only) and stored ones."""
        items: list[dict[str, Any]] = []
        file_ids: set[tuple[str, str]] = set()
        if source in ("files", "all"):
            loaded = load(self.host.config_path, self.store())
            base = self.host.config_path.parent
            for lo in loaded.objects:
                if lo.source.file.startswith(STORE_FILE + ":") or (kind and lo.obj.kind != kind):
                    continue
                key = object_key(lo.obj)
                if key is not None:
                    file_ids.add((lo.obj.kind, key))
                path = Path(lo.source.file)
                shown = str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
                items.append(
                    {
                        "kind": lo.obj.kind,
                        "key": key,
                        "source": "file",
                        "readOnly": True,
                        "file": shown,
                        "line": lo.source.line(),
                        "object": object_document(lo.obj),
                    }
                )
        if source in ("store", "all"):
            for s in self.store().list_objects(kind, include_deprovisioned=True):
                if (s.kind, s.key) in file_ids:
                    continue  # the file's wins (and is listed)
                items.append(
                    {
                        "kind": s.kind,
                        "key": s.key,
                        "source": s.source,
                        "readOnly": False,
                        "revision": s.revision,
                        "externalId": s.external_id,
                        "deprovisionedAt": s.deprovisioned_at.isoformat() if s.deprovisioned_at else None,
                        "updatedAt": s.updated_at.isoformat() if s.updated_at else None,
                        "object": dict(s.document),
                    }
                )
        items.sort(key=lambda i: (KINDS.index(i["kind"]), i["key"] or "", i["source"]))
        return items

    def render(self, request: Request, items: list[dict[str, Any]], single: bool) -> Response:
        if wants_yaml(request):
            parts = []
            for item in items:
                head = f"# {item['kind']} {item['key'] or ''} (source: {item['source']})".replace("  ", " ")
                parts.append(head + "\n" + yaml.safe_dump(item["object"], sort_keys=False))
            return Response("---\n".join(parts), media_type="application/yaml")
        return JSONResponse(items[0] if single else {"items": items})

    def source_param(self, request: Request) -> str | Response:
        unknown = unknown_query(request, {"source"})
        if unknown is not None:
            return unknown
        value = request.query_params.get("source", "all")
        if value not in ("files", "store", "all"):
            return error_answer(400, f"source={value!r}: write files, store or all")
        return value

    def kind_param(self, request: Request) -> str | Response:
        kind = str(request.path_params["kind"])
        if kind not in KINDS:
            return error_answer(404, f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
        return kind

    async def list_objects(self, request: Request) -> Response:
        """``/api/meshobjects`` (every kind) and ``/api/meshobjects/{kind}``."""
        caller = await self.guard(request, "read")
        if isinstance(caller, Response):
            return caller
        kind = self.kind_param(request) if "kind" in request.path_params else None
        source = self.source_param(request)
        if isinstance(kind, Response):
            return kind
        if isinstance(source, Response):
            return source
        items = await in_thread(self.collect, kind, source)
        return items if isinstance(items, Response) else self.render(request, items, single=False)

    # --- one object ------------------------------------------------------------------------------

    async def get_one(self, request: Request) -> Response:
        caller = await self.guard(request, "read")
        if isinstance(caller, Response):
            return caller
        kind, source = self.kind_param(request), self.source_param(request)
        if isinstance(kind, Response):
            return kind
        if isinstance(source, Response):
            return source
        key = str(request.path_params["key"])
        found = await in_thread(self.collect, kind, source)
        if isinstance(found, Response):
            return found
        items = [i for i in found if i["key"] == key]
        if not items:
            return error_answer(404, f"no {kind} {key!r}")
        return self.render(request, items[:1], single=True)

    async def delete_one(self, request: Request) -> Response:
        caller = await self.guard(request, "write")
        if isinstance(caller, Response):
            return caller
        kind = self.kind_param(request)
        if isinstance(kind, Response):
            return kind
        key = str(request.path_params["key"])
        unknown = unknown_query(request, set())
        if unknown is not None:
            return unknown
        async with self.write_lock:
            revision = await in_thread(self.delete, caller, kind, key)
            if isinstance(revision, Response):
                return revision
        log.info("meshObject deleted via the API", caller=caller.name, kind=kind, key=key)
        self.host.objects_changed()
        return Response(status_code=204)

    def delete(self, caller: apiauth.Caller, kind: str, key: str) -> int:
        from replicator.sources import stored

        st = self.store()
        loaded = load(self.host.config_path, st)
        if (kind, key) in loaded.file_keys:
            raise Refused(
                error_answer(409, f"{kind} {key!r} is defined in an inventory file: change it there")
            )
        existing = st.get_object(kind, key)
        if existing is None:
            raise Refused(error_answer(404, f"no stored {kind} {key!r}"))
        admin = caller.may("admin")
        if existing.source != SOURCE and not admin:
            raise Refused(owned_answer({(kind, key): existing.source}))
        change = stored.Change(SOURCE, deletes={(kind, key)})
        _, revision = stored.apply(
            self.host.config_path, st, change, take_over=admin, cache=self.host.loaded_cache
        )
        return revision

    # --- writing -------------------------------------------------------------------------------

    async def put(self, request: Request) -> Response:
        caller = await self.guard(request, "write")
        if isinstance(caller, Response):
            return caller
        unknown = unknown_query(request, set())
        if unknown is not None:
            return unknown
        max_bytes, max_objects = self.limits()
        media = media_type(request)
        if media not in (*YAML_TYPES, JSON_TYPE):
            return error_answer(
                415,
                f"Content-Type {media or '(none)'!r}: send application/yaml (multi-document YAML, "
                "like an inventory file) or application/json (an object or a list of objects)",
            )
        raw = await read_body(request, max_bytes)
        if raw is None:
            return error_answer(413, f"the request body is larger than {max_bytes} bytes")
        parsed = await in_thread(parse_body, raw, media)  # up to maxRequestBytes of YAML: not on the loop
        if isinstance(parsed, Response):
            return parsed
        objects, problems = parsed
        if problems:
            return problems_answer(problems)
        if not objects:
            return problems_answer([Problem(REQUEST, None, None, None, "the request holds no meshObjects")])
        if len(objects) > max_objects:
            return error_answer(413, f"{len(objects)} objects in one request; at most {max_objects}")
        seen: dict[tuple[str, str], LoadedObject] = {}
        for lo in objects:
            kind, key = object_id(lo)
            if key is None:
                problems.append(
                    Problem(
                        REQUEST,
                        lo.source.line(["metadata"]),
                        lo.label,
                        "metadata.name",
                        f"a stored {kind} needs metadata.name (only files may hold unnamed bindings)",
                    )
                )
            elif (kind, key) in seen:
                first = seen[(kind, key)].source.line()
                problems.append(
                    Problem(
                        REQUEST,
                        lo.source.line(),
                        lo.label,
                        None,
                        f"{kind} {key!r} is in the request twice"
                        + (f" (first at line {first})" if first else ""),
                    )
                )
            else:
                seen[(kind, key)] = lo
        if problems:
            return problems_answer(problems)
        async with self.write_lock:
            outcome = await in_thread(self.write, caller, objects)
            if isinstance(outcome, Response):
                return outcome
        if outcome.changed:
            log.info(
                "meshObjects changed via the API",
                caller=caller.name,
                created=[f"{r['kind']} {r['key']}" for r in outcome.created],
                updated=[f"{r['kind']} {r['key']}" for r in outcome.updated],
            )
            self.host.objects_changed()
        return JSONResponse(outcome.body())

    def write(self, caller: apiauth.Caller, objects: list[LoadedObject]) -> WriteOutcome:
        from replicator.sources import stored

        st = self.store()
        loaded = load(self.host.config_path, st)
        in_files = [lo for lo in objects if object_id(lo) in loaded.file_keys]
        if in_files:
            raise Refused(
                error_answer(
                    409,
                    "defined in an inventory file, read-only here: "
                    + ", ".join(f"{lo.obj.kind} {object_key(lo.obj)}" for lo in in_files[:20]),
                    objects=[object_ref(lo.obj.kind, str(object_key(lo.obj))) for lo in in_files],
                )
            )
        admin = caller.may("admin")
        outcome = WriteOutcome()
        owned: dict[tuple[str, str], str] = {}
        for lo in objects:
            kind, key = lo.obj.kind, str(object_key(lo.obj))
            existing = st.get_object(kind, key)
            if existing is None:
                outcome.created.append(object_ref(kind, key))
                continue
            if existing.source != SOURCE:
                owned[(kind, key)] = existing.source
            same = (
                dict(existing.document) == object_document(lo.obj)
                and existing.deprovisioned_at is None
                and existing.source == SOURCE
            )
            (outcome.unchanged if same else outcome.updated).append(object_ref(kind, key))
        if owned and not admin:
            raise Refused(owned_answer(owned))
        change = stored.Change(SOURCE, puts=list(objects))
        _, outcome.revision = stored.apply(
            self.host.config_path, st, change, take_over=admin, cache=self.host.loaded_cache
        )
        return outcome

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/meshobjects", self.list_objects, methods=["GET"]),
            Route("/api/meshobjects", self.put, methods=["PUT"]),
            Route("/api/meshobjects/{kind}", self.list_objects, methods=["GET"]),
            # GET routes answer HEAD too: a write is never reachable through a GET route.
            Route("/api/meshobjects/{kind}/{key:objectkey}", self.get_one, methods=["GET"]),
            Route("/api/meshobjects/{kind}/{key:objectkey}", self.delete_one, methods=["DELETE"]),
        ]
