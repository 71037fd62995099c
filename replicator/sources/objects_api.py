"""The meshObject API of the daemon (``/api/meshobjects``): read every object (files and state
store), write and delete stored objects, all or nothing, validated exactly like ``replicator
validate`` validates files. Also serves the OpenAPI document of the daemon (``/api/openapi.json``).

Writes go through :mod:`replicator.sources.stored` (source ``api``); objects defined in an inventory file
are read-only here (409), objects another identity source owns need the ``admin`` scope (take-over).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from replicator.core.inventory import KINDS, object_document, object_key
from replicator.inputs.loader import (
    STORE_FILE,
    InputError,
    LoadedObject,
    Problem,
    load,
    objects_from_documents,
    parse_yaml_bytes,
)
from replicator.logs import get_logger
from replicator.sources import apiauth
from state import ObjectOwnedError, Store, StoreError

if TYPE_CHECKING:
    from replicator.sources.host import SourceHost

log = get_logger("replicator.sources.objects_api")

SOURCE = "api"
"""Owner of the objects written through this API."""
REQUEST = "request"
"""``Problem.file`` of problems found in a request body."""
YAML_TYPES = ("application/yaml", "text/yaml", "application/x-yaml")
JSON_TYPE = "application/json"
MAX_ERRORS = 1000
"""Problems listed in one 422 answer (the rest are counted)."""


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _problems(problems: Sequence[Problem], status: int = 422) -> JSONResponse:
    listed = [
        {"file": p.file, "line": p.line, "object": p.obj, "field": p.field, "message": p.message}
        for p in problems[:MAX_ERRORS]
    ]
    body: dict[str, Any] = {"errors": listed}
    if len(problems) > MAX_ERRORS:
        body["more"] = len(problems) - MAX_ERRORS
    return JSONResponse(body, status_code=status)


class _Refused(Exception):
    """An answer other than 200 decided while working in the thread pool."""

    def __init__(self, response: Response) -> None:
        self.response = response


@dataclass
class _Outcome:
    created: list[dict[str, str]] = field(default_factory=list)
    updated: list[dict[str, str]] = field(default_factory=list)
    unchanged: list[dict[str, str]] = field(default_factory=list)
    revision: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)

    def body(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "revision": self.revision,
        }


def _wants_yaml(request: Request) -> bool:
    """``Accept``: the first of JSON or YAML named wins; JSON when neither is."""
    for part in request.headers.get("accept", "").split(","):
        media = part.split(";")[0].strip().lower()
        if media in YAML_TYPES:
            return True
        if media in (JSON_TYPE, "application/*", "*/*"):
            return False
    return False


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` bytes (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(raw: bytes, media: str) -> tuple[list[LoadedObject], list[Problem]]:
    """The meshObjects of a request body (multi-document YAML, or JSON: one object or a list),
    every problem located ``request:LINE`` like a file's."""
    if media == JSON_TYPE:
        try:
            data = json.loads(raw)
        except UnicodeDecodeError as e:
            return [], [
                Problem(REQUEST, raw[: e.start].count(b"\n") + 1, None, None, f"cannot read: {e.reason}")
            ]
        except json.JSONDecodeError as e:
            return [], [Problem(REQUEST, e.lineno, None, None, f"invalid JSON: {e.msg}")]
        # JSON is YAML: parse it again for the nodes, so that every problem has its line.
        docs, problems = parse_yaml_bytes(raw, REQUEST)
        if problems or len(docs) != 1:
            located: list[tuple[Any, yaml.Node | None]] = [(data, None)]
        else:
            located = [docs[0]]
        value, node = located[0]
        if isinstance(value, list):
            nodes = node.value if isinstance(node, yaml.SequenceNode) else [None] * len(value)
            located = list(zip(value, nodes, strict=False))
        if not located:
            return [], []
        return objects_from_documents(located, REQUEST)
    docs, problems = parse_yaml_bytes(raw, REQUEST)
    if problems:
        return [], problems
    return objects_from_documents(docs, REQUEST)


_T = TypeVar("_T")


async def _in_thread(fn: Callable[..., _T], *args: Any) -> _T | Response:
    """``fn`` in the thread pool (it reads files and the store), its refusals as answers."""
    try:
        return await run_in_threadpool(fn, *args)
    except _Refused as e:
        return e.response
    except InputError as e:  # the config or an inventory file is broken now
        return _problems(e.problems)
    except ObjectOwnedError as e:
        return _owned(e.owned)
    except StoreError as e:
        log.error("the state store failed during an object API call", error=str(e))
        return _error(503, "the state store cannot be used right now; nothing was changed")


def _unknown_query(request: Request, allowed: set[str]) -> Response | None:
    """400 for a query parameter the endpoint does not take (a typo would otherwise be ignored)."""
    unknown = sorted(set(request.query_params.keys()) - allowed)
    if not unknown:
        return None
    takes = f"it takes only {', '.join(sorted(allowed))}" if allowed else "it takes none"
    return _error(400, f"unknown query parameter {unknown[0]!r}: {takes}")


def _id(lo: LoadedObject) -> tuple[str, str | None]:
    return lo.obj.kind, object_key(lo.obj)


def _ref(kind: str, key: str) -> dict[str, str]:
    return {"kind": kind, "key": key}


class _KeyConvertor(Convertor[str]):
    """An object key: the rest of the path, slashes and any other character included (the
    ``path`` convertor's ``.*`` stops at a newline, which would leave the request unrouted)."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("objectkey", _KeyConvertor())


def routes(host: SourceHost) -> list[BaseRoute]:
    write_lock = asyncio.Lock()
    """One write at a time on this replica, so requests queue here rather than on the store's
    objects lock (which serialises validation and write across replicas and processes)."""

    def guard(request: Request, scope: str) -> apiauth.Caller | Response:
        caller = apiauth.authorize(request, scope, host.identify)
        if isinstance(caller, Response):
            return caller
        if host.validated is None:
            return _error(503, "the daemon has no valid config loaded")
        if not host.validated.config.stored_objects:
            return _error(
                409,
                "the object API needs stored meshObjects: set storedObjects: true in the config "
                "(the inventory does not read stored objects now)",
            )
        if host.store is None:
            return _error(503, "the state store is not open")
        return caller

    def store() -> Store:
        assert host.store is not None  # see guard
        return host.store

    def limits() -> tuple[int, int]:
        api = host.validated.config.api if host.validated is not None else None
        return (api.max_request_bytes, api.max_request_objects) if api else (5_000_000, 5000)

    # --- reading -------------------------------------------------------------------------------

    def collect(kind: str | None, source: str) -> list[dict[str, Any]]:
        """Objects as API items: file objects (read-only) and stored ones."""
        items: list[dict[str, Any]] = []
        file_ids: set[tuple[str, str]] = set()
        if source in ("files", "all"):
            loaded = load(host.config_path, store())
            base = host.config_path.parent
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
            for s in store().list_objects(kind, include_deprovisioned=True):
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

    def render(request: Request, items: list[dict[str, Any]], single: bool) -> Response:
        if _wants_yaml(request):
            parts = []
            for item in items:
                head = f"# {item['kind']} {item['key'] or ''} (source: {item['source']})".replace("  ", " ")
                parts.append(head + "\n" + yaml.safe_dump(item["object"], sort_keys=False))
            return Response("---\n".join(parts), media_type="application/yaml")
        return JSONResponse(items[0] if single else {"items": items})

    def source_param(request: Request) -> str | Response:
        unknown = _unknown_query(request, {"source"})
        if unknown is not None:
            return unknown
        value = request.query_params.get("source", "all")
        if value not in ("files", "store", "all"):
            return _error(400, f"source={value!r}: write files, store or all")
        return value

    def kind_param(request: Request) -> str | Response:
        kind = str(request.path_params["kind"])
        if kind not in KINDS:
            return _error(404, f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
        return kind

    async def list_objects(request: Request) -> Response:
        """``/api/meshobjects`` (every kind) and ``/api/meshobjects/{kind}``."""
        caller = guard(request, "read")
        if isinstance(caller, Response):
            return caller
        kind = kind_param(request) if "kind" in request.path_params else None
        source = source_param(request)
        if isinstance(kind, Response):
            return kind
        if isinstance(source, Response):
            return source
        items = await _in_thread(collect, kind, source)
        return items if isinstance(items, Response) else render(request, items, single=False)

    # --- one object ------------------------------------------------------------------------------

    async def get_one(request: Request) -> Response:
        caller = guard(request, "read")
        if isinstance(caller, Response):
            return caller
        kind, source = kind_param(request), source_param(request)
        if isinstance(kind, Response):
            return kind
        if isinstance(source, Response):
            return source
        key = str(request.path_params["key"])
        found = await _in_thread(collect, kind, source)
        if isinstance(found, Response):
            return found
        items = [i for i in found if i["key"] == key]
        if not items:
            return _error(404, f"no {kind} {key!r}")
        return render(request, items[:1], single=True)

    async def delete_one(request: Request) -> Response:
        caller = guard(request, "write")
        if isinstance(caller, Response):
            return caller
        kind = kind_param(request)
        if isinstance(kind, Response):
            return kind
        key = str(request.path_params["key"])
        unknown = _unknown_query(request, set())
        if unknown is not None:
            return unknown
        async with write_lock:
            revision = await _in_thread(delete, caller, kind, key)
            if isinstance(revision, Response):
                return revision
        log.info("meshObject deleted via the API", caller=caller.name, kind=kind, key=key)
        host.objects_changed()
        return Response(status_code=204)

    def delete(caller: apiauth.Caller, kind: str, key: str) -> int:
        from replicator.sources import stored

        st = store()
        loaded = load(host.config_path, st)
        if (kind, key) in loaded.file_keys:
            raise _Refused(_error(409, f"{kind} {key!r} is defined in an inventory file: change it there"))
        existing = st.get_object(kind, key)
        if existing is None:
            raise _Refused(_error(404, f"no stored {kind} {key!r}"))
        admin = caller.may("admin")
        if existing.source != SOURCE and not admin:
            raise _Refused(_owned({(kind, key): existing.source}))
        change = stored.Change(SOURCE, deletes={(kind, key)})
        _, revision = stored.apply(host.config_path, st, change, take_over=admin)
        return revision

    # --- writing -------------------------------------------------------------------------------

    async def put(request: Request) -> Response:
        caller = guard(request, "write")
        if isinstance(caller, Response):
            return caller
        unknown = _unknown_query(request, set())
        if unknown is not None:
            return unknown
        max_bytes, max_objects = limits()
        media = _media_type(request)
        if media not in (*YAML_TYPES, JSON_TYPE):
            return _error(
                415,
                f"Content-Type {media or '(none)'!r}: send application/yaml (multi-document YAML, "
                "like an inventory file) or application/json (an object or a list of objects)",
            )
        raw = await _read_body(request, max_bytes)
        if raw is None:
            return _error(413, f"the request body is larger than {max_bytes} bytes")
        objects, problems = parse_body(raw, media)
        if problems:
            return _problems(problems)
        if not objects:
            return _problems([Problem(REQUEST, None, None, None, "the request holds no meshObjects")])
        if len(objects) > max_objects:
            return _error(413, f"{len(objects)} objects in one request; at most {max_objects}")
        seen: dict[tuple[str, str], LoadedObject] = {}
        for lo in objects:
            kind, key = _id(lo)
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
            return _problems(problems)
        async with write_lock:
            outcome = await _in_thread(write, caller, objects)
            if isinstance(outcome, Response):
                return outcome
        if outcome.changed:
            log.info(
                "meshObjects changed via the API",
                caller=caller.name,
                created=[f"{r['kind']} {r['key']}" for r in outcome.created],
                updated=[f"{r['kind']} {r['key']}" for r in outcome.updated],
            )
            host.objects_changed()
        return JSONResponse(outcome.body())

    def write(caller: apiauth.Caller, objects: list[LoadedObject]) -> _Outcome:
        from replicator.sources import stored

        st = store()
        loaded = load(host.config_path, st)
        in_files = [lo for lo in objects if _id(lo) in loaded.file_keys]
        if in_files:
            raise _Refused(
                _error(
                    409,
                    "defined in an inventory file, read-only here: "
                    + ", ".join(f"{lo.obj.kind} {object_key(lo.obj)}" for lo in in_files[:20]),
                    objects=[_ref(lo.obj.kind, str(object_key(lo.obj))) for lo in in_files],
                )
            )
        admin = caller.may("admin")
        outcome = _Outcome()
        owned: dict[tuple[str, str], str] = {}
        for lo in objects:
            kind, key = lo.obj.kind, str(object_key(lo.obj))
            existing = st.get_object(kind, key)
            if existing is None:
                outcome.created.append(_ref(kind, key))
                continue
            if existing.source != SOURCE:
                owned[(kind, key)] = existing.source
            same = (
                dict(existing.document) == object_document(lo.obj)
                and existing.deprovisioned_at is None
                and existing.source == SOURCE
            )
            (outcome.unchanged if same else outcome.updated).append(_ref(kind, key))
        if owned and not admin:
            raise _Refused(_owned(owned))
        change = stored.Change(SOURCE, puts=list(objects))
        _, outcome.revision = stored.apply(host.config_path, st, change, take_over=admin)
        return outcome

    async def openapi(_: Request) -> Response:
        return JSONResponse(openapi_document())

    return [
        Route("/api/openapi.json", openapi, methods=["GET"]),
        Route("/api/meshobjects", list_objects, methods=["GET"]),
        Route("/api/meshobjects", put, methods=["PUT"]),
        Route("/api/meshobjects/{kind}", list_objects, methods=["GET"]),
        # GET routes answer HEAD too: a write is never reachable through a GET route.
        Route("/api/meshobjects/{kind}/{key:objectkey}", get_one, methods=["GET"]),
        Route("/api/meshobjects/{kind}/{key:objectkey}", delete_one, methods=["DELETE"]),
    ]


def _owned(owned: dict[tuple[str, str], str]) -> JSONResponse:
    listed = ", ".join(f"{k} {n!r} (owned by {s})" for (k, n), s in sorted(owned.items())[:20])
    return _error(
        409,
        f"owned by another source: {listed}; a key with the admin scope may take them over",
        owned=[{"kind": k, "key": n, "source": s} for (k, n), s in sorted(owned.items())],
    )


# --- OpenAPI ---------------------------------------------------------------------------------------


def _object_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema of one meshObject, component schemas) from the pydantic models, as
    ``replicator schema`` prints them."""
    from pydantic import TypeAdapter

    from replicator.core.inventory import MeshObject

    schema = TypeAdapter(MeshObject).json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return schema, defs


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the daemon's HTTP surface."""
    mesh_object, components = _object_schemas()
    components = dict(components)
    components["MeshObject"] = mesh_object
    ref = {"$ref": "#/components/schemas/MeshObject"}
    error = {
        "type": "object",
        "properties": {"error": {"type": "string"}},
        "required": ["error"],
    }
    problem = {
        "type": "object",
        "properties": {
            "file": {"type": "string"},
            "line": {"type": ["integer", "null"]},
            "object": {"type": ["string", "null"]},
            "field": {"type": ["string", "null"]},
            "message": {"type": "string"},
        },
        "required": ["file", "line", "object", "field", "message"],
    }
    item = {
        "type": "object",
        "properties": {
            "kind": {"type": "string", "enum": list(KINDS)},
            "key": {"type": ["string", "null"]},
            "source": {"type": "string", "description": "file, api, oidc:<name>, ldap:<name> or scim"},
            "readOnly": {"type": "boolean", "description": "defined in an inventory file"},
            "file": {"type": "string"},
            "line": {"type": ["integer", "null"]},
            "revision": {"type": "integer"},
            "externalId": {"type": ["string", "null"]},
            "deprovisionedAt": {"type": ["string", "null"], "format": "date-time"},
            "updatedAt": {"type": ["string", "null"], "format": "date-time"},
            "object": ref,
        },
        "required": ["kind", "key", "source", "readOnly", "object"],
    }
    obj_ref = {
        "type": "object",
        "properties": {"kind": {"type": "string"}, "key": {"type": "string"}},
        "required": ["kind", "key"],
    }
    components.update(
        {
            "Error": error,
            "Problem": problem,
            "Problems": {
                "type": "object",
                "properties": {
                    "errors": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}},
                    "more": {"type": "integer"},
                },
                "required": ["errors"],
            },
            "Item": item,
            "Items": {
                "type": "object",
                "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}}},
                "required": ["items"],
            },
            "ObjectRef": obj_ref,
            "WriteResult": {
                "type": "object",
                "properties": {
                    name: {"type": "array", "items": {"$ref": "#/components/schemas/ObjectRef"}}
                    for name in ("created", "updated", "unchanged")
                }
                | {"revision": {"type": "integer"}},
                "required": ["created", "updated", "unchanged"],
            },
        }
    )

    def resp(description: str, schema: str | None = "Error", media: str = JSON_TYPE) -> dict[str, Any]:
        out: dict[str, Any] = {"description": description}
        if schema is not None:
            out["content"] = {media: {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
        return out

    auth_errors = {
        "401": resp("missing or unknown API key"),
        "403": resp("the key lacks the scope"),
    }
    object_errors = {
        **auth_errors,
        "409": resp("storedObjects is off (the inventory does not read stored objects)"),
        "503": resp("no valid config loaded, or the state store cannot be used"),
    }
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    kind_param = {
        "name": "kind",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": list(KINDS)},
    }
    key_param = {
        "name": "key",
        "in": "path",
        "required": True,
        "description": "name; ws/name for projects; ws/project/name for bindings; "
        "ws/project/platform for tenants",
        "schema": {"type": "string", "minLength": 1},
    }
    source_param = {
        "name": "source",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": ["files", "store", "all"], "default": "all"},
    }
    items_content = {
        JSON_TYPE: {"schema": {"$ref": "#/components/schemas/Items"}},
        "application/yaml": {"schema": {"type": "string"}},
    }
    text = {"text/plain": {"schema": {"type": "string"}}}
    json_body = {"oneOf": [ref, {"type": "array", "items": ref, "minItems": 1}]}
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "Liveness: 200 while the daemon's loop ticks",
                "security": [],
                "responses": {
                    "200": {"description": "alive", "content": text},
                    "503": {"description": "stalled or stopping", "content": text},
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: a config is loaded and the state store answers",
                "security": [],
                "responses": {
                    "200": {"description": "ready", "content": text},
                    "503": {"description": "not ready, with the reason", "content": text},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (replicator_*)",
                "security": [],
                "responses": {"200": {"description": "Prometheus text format", "content": text}},
            }
        },
        "/v1/status": {
            "get": {
                "summary": "Per tenant: last run, outcome, open warnings (scope read)",
                "security": secured,
                "responses": {
                    "200": {"description": "status", "content": {JSON_TYPE: {"schema": {"type": "object"}}}},
                    **auth_errors,
                },
            }
        },
        "/v1/tenants/{workspace}/{project}/{platform}/reconcile": {
            "post": {
                "summary": "Queue a tenant now and clear its hold (scope write)",
                "security": secured,
                "parameters": [
                    {"name": n, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
                    for n in ("workspace", "project", "platform")
                ],
                "responses": {
                    "202": {"description": "queued", "content": {JSON_TYPE: {"schema": {"type": "object"}}}},
                    "404": resp("unknown tenant"),
                    **auth_errors,
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {JSON_TYPE: {"schema": {}}}}},
            }
        },
        "/api/meshobjects": {
            "get": {
                "summary": "Every meshObject: inventory files (read-only) and the state store (scope read)",
                "security": secured,
                "parameters": [source_param],
                "responses": {
                    "200": {"description": "the objects", "content": items_content},
                    "400": resp("bad or unknown query parameter"),
                    **object_errors,
                },
            },
            "put": {
                "summary": "Create or replace meshObjects, all or nothing (scope write; admin to take over)",
                "description": "The body is multi-document YAML like an inventory file, or JSON (one "
                "object or a list). The whole inventory it would produce is validated first; any "
                "problem answers 422 with every problem located request:LINE and writes nothing.",
                "security": secured,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/yaml": {
                            "schema": ref,
                            "description": "one or more YAML documents (---), as in an inventory file",
                        },
                        JSON_TYPE: {"schema": json_body},
                    },
                },
                "responses": {
                    "200": resp("written (or unchanged)", "WriteResult"),
                    "400": resp("unknown query parameter"),
                    "413": resp("body or object count over the limit"),
                    "415": resp("not YAML or JSON"),
                    "422": resp("invalid: every problem, located; nothing written", "Problems"),
                    **object_errors,
                    "409": resp("an object is defined in an inventory file or owned by another source"),
                },
            },
        },
        "/api/meshobjects/{kind}": {
            "get": {
                "summary": "The meshObjects of one kind (scope read)",
                "security": secured,
                "parameters": [kind_param, source_param],
                "responses": {
                    "200": {"description": "the objects", "content": items_content},
                    "400": resp("bad or unknown query parameter"),
                    "404": resp("unknown kind"),
                    **object_errors,
                },
            }
        },
        "/api/meshobjects/{kind}/{key}": {
            "get": {
                "summary": "One meshObject (scope read)",
                "security": secured,
                "parameters": [kind_param, key_param, source_param],
                "responses": {
                    "200": {
                        "description": "the object",
                        "content": {
                            JSON_TYPE: {"schema": {"$ref": "#/components/schemas/Item"}},
                            "application/yaml": {"schema": {"type": "string"}},
                        },
                    },
                    "400": resp("bad or unknown query parameter"),
                    "404": resp("no such object"),
                    **object_errors,
                },
            },
            "delete": {
                "summary": "Delete a stored meshObject, if the inventory stays valid (scope write)",
                "security": secured,
                "parameters": [kind_param, key_param],
                "responses": {
                    "204": {"description": "deleted"},
                    "400": resp("unknown query parameter"),
                    "404": resp("no such stored object"),
                    "422": resp("the inventory would be invalid (e.g. a binding names the user)", "Problems"),
                    **object_errors,
                    "409": resp("defined in an inventory file, or owned by another source"),
                },
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "replicator daemon",
            "version": _version(),
            "description": "Health, metrics, status, triggers and the meshObject API of `replicator run`.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: from the config (api.keys) or `replicator apikey create`",
                }
            },
        },
        "security": secured,
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("replicator")
    except PackageNotFoundError:
        return "0"
