"""The HTTP side of the meshObject API: what a request body may be and how it is read (size first,
then the media type, then every meshObject with its line), and the error answers (a JSON body
``{"error": ...}``, or ``{"errors": [...]}`` with every problem located)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from replicator.core.inventory import object_key
from replicator.inputs.loader import (
    InputError,
    LoadedObject,
    Problem,
    objects_from_documents,
    parse_yaml_bytes,
)
from replicator.logs import get_logger
from replicator.sources.bodies import lone_surrogate
from replicator.threads import blocking
from state import ObjectOwnedError, StoreError

log = get_logger("replicator.sources.objects_api")

SOURCE = "api"
"""Owner of the objects written through this API."""
REQUEST = "request"
"""``Problem.file`` of problems found in a request body."""
YAML_TYPES = ("application/yaml", "text/yaml", "application/x-yaml")
JSON_TYPE = "application/json"
MAX_ERRORS = 1000
"""Problems listed in one 422 answer (the rest are counted)."""


def error_answer(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def problems_answer(problems: Sequence[Problem], status: int = 422) -> JSONResponse:
    listed = [
        {"file": p.file, "line": p.line, "object": p.obj, "field": p.field, "message": p.message}
        for p in problems[:MAX_ERRORS]
    ]
    body: dict[str, Any] = {"errors": listed}
    if len(problems) > MAX_ERRORS:
        body["more"] = len(problems) - MAX_ERRORS
    return JSONResponse(body, status_code=status)


class Refused(Exception):
    """An answer other than 200 decided while working in the thread pool."""

    def __init__(self, response: Response) -> None:
        self.response = response


@dataclass
class WriteOutcome:
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


def wants_yaml(request: Request) -> bool:
    """``Accept``: the first of JSON or YAML named wins; JSON when neither is."""
    for part in request.headers.get("accept", "").split(","):
        media = part.split(";")[0].strip().lower()
        if media in YAML_TYPES:
            return True
        if media in (JSON_TYPE, "application/*", "*/*"):
            return False
    return False


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def parse_body(raw: bytes, media: str) -> tuple[list[LoadedObject], list[Problem]]:
    """The meshObjects of a request body (multi-document YAML, or JSON: one object or a list),
    every problem located ``request:LINE`` like a file's."""
    if media == JSON_TYPE:
        try:
            data = json.loads(raw, object_pairs_hook=_unique_keys)
        except UnicodeDecodeError as e:
            return [], [
                Problem(REQUEST, raw[: e.start].count(b"\n") + 1, None, None, f"cannot read: {e.reason}")
            ]
        except json.JSONDecodeError as e:
            return [], [Problem(REQUEST, e.lineno, None, None, f"invalid JSON: {e.msg}")]
        except (ValueError, RecursionError) as e:  # a number of thousands of digits; deep nesting
            return [], [Problem(REQUEST, None, None, None, f"invalid JSON: {str(e) or type(e).__name__}")]
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
        return _objects(located)
    docs, problems = parse_yaml_bytes(raw, REQUEST)
    if problems:
        return [], problems
    return _objects(docs)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique (JSON would keep the last of two silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _objects(docs: Sequence[tuple[Any, yaml.Node | None]]) -> tuple[list[LoadedObject], list[Problem]]:
    for data, node in docs:
        bad = lone_surrogate(data)
        if bad is not None:
            line = node.start_mark.line + 1 if node is not None else None
            return [], [
                Problem(REQUEST, line, None, None, f"{bad!r} holds a lone UTF-16 surrogate, no character")
            ]
    return objects_from_documents(docs, REQUEST)


_T = TypeVar("_T")


async def in_thread(fn: Callable[..., _T], *args: Any) -> _T | Response:
    """``fn`` in a worker thread (it reads files and the store), its refusals as answers."""
    try:
        return await blocking(fn, *args)
    except Refused as e:
        return e.response
    except InputError as e:  # the config or an inventory file is broken now
        return problems_answer(e.problems)
    except ObjectOwnedError as e:
        return owned_answer(e.owned)
    except StoreError as e:
        log.error("the state store failed during an object API call", error=str(e))
        return error_answer(503, "the state store cannot be used right now; nothing was changed")


def unknown_query(request: Request, allowed: set[str]) -> Response | None:
    """400 for a query parameter the endpoint does not take (a typo would otherwise be ignored)."""
    unknown = sorted(set(request.query_params.keys()) - allowed)
    if not unknown:
        return None
    takes = f"it takes only {', '.join(sorted(allowed))}" if allowed else "it takes none"
    return error_answer(400, f"unknown query parameter {unknown[0]!r}: {takes}")


def object_id(lo: LoadedObject) -> tuple[str, str | None]:
    return lo.obj.kind, object_key(lo.obj)


def object_ref(kind: str, key: str) -> dict[str, str]:
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


def owned_answer(owned: dict[tuple[str, str], str]) -> JSONResponse:
    listed = ", ".join(f"{k} {n!r} (owned by {s})" for (k, n), s in sorted(owned.items())[:20])
    return error_answer(
        409,
        f"owned by another source: {listed}; a key with the admin scope may take them over",
        owned=[{"kind": k, "key": n, "source": s} for (k, n), s in sorted(owned.items())],
    )
