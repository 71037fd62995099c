"""The OpenAPI 3.1 document of the daemon's HTTP surface (``GET /api/openapi.json``): health,
readiness, metrics, status, triggers and the meshObject API. The schemas come from the pydantic
models of the answers and of the meshObjects; only the operations are described here."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from replicator.core.inventory import KINDS, MeshObject
from replicator.sources.objects_api.http import JSON_TYPE
from replicator.sources.objects_api.models import ANSWERS

REF = "#/components/schemas/{model}"
TEXT = {"text/plain": {"schema": {"type": "string"}}}
YAML = "application/yaml"
SECURED: list[dict[str, list[str]]] = [{"bearer": []}]


def components() -> dict[str, Any]:
    """Every schema the document names: the answers' models and the meshObject union."""
    _, answers = models_json_schema([(m, "validation") for m in ANSWERS], ref_template=REF)
    mesh_object = TypeAdapter(MeshObject).json_schema(by_alias=True, ref_template=REF)
    schemas: dict[str, Any] = {**answers.get("$defs", {}), **mesh_object.pop("$defs", {})}
    schemas["MeshObject"] = mesh_object
    return schemas


def _ref(model: str) -> dict[str, str]:
    return {"$ref": REF.format(model=model)}


def _answer(description: str, model: str | None = "Error") -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if model is not None:
        out["content"] = {JSON_TYPE: {"schema": _ref(model)}}
    return out


def _path_param(name: str, description: str = "", **schema: Any) -> dict[str, Any]:
    param = {"name": name, "in": "path", "required": True, "schema": {"type": "string", **schema}}
    return param | ({"description": description} if description else {})


AUTH_ERRORS = {"401": _answer("missing or unknown API key"), "403": _answer("the key lacks the scope")}
OBJECT_ERRORS = {
    **AUTH_ERRORS,
    "409": _answer("storedObjects is off (the inventory does not read stored objects)"),
    "503": _answer("no valid config loaded, or the state store cannot be used"),
}
KIND = _path_param("kind", enum=list(KINDS))
KEY = _path_param(
    "key",
    "name; ws/name for projects; ws/project/name for bindings; ws/project/platform for tenants",
    minLength=1,
)
SOURCE = {
    "name": "source",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["files", "store", "all"], "default": "all"},
}
ITEMS = {JSON_TYPE: {"schema": _ref("Items")}, YAML: {"schema": {"type": "string"}}}
ONE_ITEM = {JSON_TYPE: {"schema": _ref("Item")}, YAML: {"schema": {"type": "string"}}}


def _probe(summary: str, ok: str, failing: str | None) -> dict[str, Any]:
    responses = {"200": {"description": ok, "content": TEXT}}
    if failing:
        responses["503"] = {"description": failing, "content": TEXT}
    return {"get": {"summary": summary, "security": [], "responses": responses}}


def _paths() -> dict[str, Any]:
    any_json = {JSON_TYPE: {"schema": {"type": "object"}}}
    return {
        "/healthz": _probe("Liveness: 200 while the daemon's loop ticks", "alive", "stalled or stopping"),
        "/readyz": _probe(
            "Readiness: a config is loaded and the state store answers", "ready", "not ready, with the reason"
        ),
        "/metrics": _probe("Prometheus metrics (replicator_*)", "Prometheus text format", None),
        "/v1/status": {
            "get": {
                "summary": "Per tenant: last run, outcome, open warnings (scope read)",
                "security": SECURED,
                "responses": {"200": {"description": "status", "content": any_json}, **AUTH_ERRORS},
            }
        },
        "/v1/reconcile": {
            "post": {
                "summary": "Start a full resync now (scope write): every tenant (of one platform) is queued "
                "at resync priority, after changes, as the periodic resync does; held tenants stay held",
                "security": SECURED,
                "parameters": [
                    {
                        "name": "platform",
                        "in": "query",
                        "required": False,
                        "description": "only the tenants of this platform identifier",
                        "schema": {"type": "string", "minLength": 1},
                    }
                ],
                "responses": {
                    "202": {
                        "description": "queued: how many, and how many were waiting or running",
                        "content": any_json,
                    },
                    "400": _answer("an empty platform, or an unknown query parameter"),
                    "404": _answer("unknown platform"),
                    **AUTH_ERRORS,
                },
            }
        },
        "/v1/tenants/{workspace}/{project}/{platform}/reconcile": {
            "post": {
                "summary": "Queue a tenant now and clear its hold (scope write); a tenant in backoff "
                "stays in backoff unless force=true",
                "security": SECURED,
                "parameters": [
                    *(_path_param(n, minLength=1) for n in ("workspace", "project", "platform")),
                    {
                        "name": "force",
                        "in": "query",
                        "required": False,
                        "description": "retry now: end the tenant's backoff after failures",
                        "schema": {"type": "boolean", "default": False},
                    },
                ],
                "responses": {
                    "202": {"description": "queued", "content": any_json},
                    "400": _answer("force is not true or false, or an unknown query parameter"),
                    "404": _answer("unknown tenant"),
                    **AUTH_ERRORS,
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
                "security": SECURED,
                "parameters": [SOURCE],
                "responses": {
                    "200": {"description": "the objects", "content": ITEMS},
                    "400": _answer("bad or unknown query parameter"),
                    **OBJECT_ERRORS,
                },
            },
            "put": {
                "summary": "Create or replace meshObjects, all or nothing (scope write; admin to take over)",
                "description": "The body is multi-document YAML like an inventory file, or JSON (one "
                "object or a list). The whole inventory it would produce is validated first; any "
                "problem answers 422 with every problem located request:LINE and writes nothing.",
                "security": SECURED,
                "requestBody": {
                    "required": True,
                    "content": {
                        YAML: {
                            "schema": _ref("MeshObject"),
                            "description": "one or more YAML documents (---), as in an inventory file",
                        },
                        JSON_TYPE: {
                            "schema": {
                                "oneOf": [
                                    _ref("MeshObject"),
                                    {"type": "array", "items": _ref("MeshObject"), "minItems": 1},
                                ]
                            }
                        },
                    },
                },
                "responses": {
                    "200": _answer("written (or unchanged)", "WriteResult"),
                    "400": _answer("unknown query parameter"),
                    "413": _answer("body or object count over the limit"),
                    "415": _answer("not YAML or JSON"),
                    "422": _answer("invalid: every problem, located; nothing written", "Problems"),
                    **OBJECT_ERRORS,
                    "409": _answer("an object is defined in an inventory file or owned by another source"),
                },
            },
        },
        "/api/meshobjects/{kind}": {
            "get": {
                "summary": "The meshObjects of one kind (scope read)",
                "security": SECURED,
                "parameters": [KIND, SOURCE],
                "responses": {
                    "200": {"description": "the objects", "content": ITEMS},
                    "400": _answer("bad or unknown query parameter"),
                    "404": _answer("unknown kind"),
                    **OBJECT_ERRORS,
                },
            }
        },
        "/api/meshobjects/{kind}/{key}": {
            "get": {
                "summary": "One meshObject (scope read)",
                "security": SECURED,
                "parameters": [KIND, KEY, SOURCE],
                "responses": {
                    "200": {
                        "description": "the object",
                        "content": {
                            JSON_TYPE: {"schema": _ref("Item")},
                            YAML: {"schema": {"type": "string"}},
                        },
                    },
                    "400": _answer("bad or unknown query parameter"),
                    "404": _answer("no such object"),
                    **OBJECT_ERRORS,
                },
            },
            "delete": {
                "summary": "Delete a stored meshObject, if the inventory stays valid (scope write)",
                "security": SECURED,
                "parameters": [KIND, KEY],
                "responses": {
                    "204": {"description": "deleted"},
                    "400": _answer("unknown query parameter"),
                    "404": _answer("no such stored object"),
                    "422": _answer(
                        "the inventory would be invalid (e.g. a binding names the user)", "Problems"
                    ),
                    **OBJECT_ERRORS,
                    "409": _answer("defined in an inventory file, or owned by another source"),
                },
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the daemon's HTTP surface."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "replicator daemon",
            "version": _version(),
            "description": "Health, metrics, status, triggers and the meshObject API of `replicator run`.",
        },
        "paths": _paths(),
        "components": {
            "schemas": components(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: from the config (api.keys) or `replicator apikey create`",
                }
            },
        },
        "security": SECURED,
    }


def _version() -> str:
    try:
        return version("replicator")
    except PackageNotFoundError:
        return "0"
