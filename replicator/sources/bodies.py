"""Request bodies of the daemon's HTTP endpoints, read with limits checked before the work: the
size while the body streams in (nothing past the limit is read or kept), the nesting depth of a
JSON body before anything walks it. Every endpoint that takes a body reads it through here."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request

MAX_JSON_DEPTH = 32
"""Nesting levels a JSON body may have. A SCIM resource or PATCH nests four or five, a login body
one. Python's decoder stops near 1,000 levels with a RecursionError; whatever walks a parsed
body afterwards (validation, a patch) recurses too, so the limit is checked before."""


class BodyError(Exception):
    """A body the endpoint does not take: ``status`` 413 (too large) or 400 (not JSON, too deep)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` bytes: a declared Content-Length over it
    is refused before reading; otherwise the stream is read until it passes the limit, no further."""
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


async def read_limited(request: Request, limit: int) -> bytes:
    """:func:`read_body`, a body over ``limit`` raised as a 413 :class:`BodyError`."""
    raw = await read_body(request, limit)
    if raw is None:
        raise BodyError(413, f"the request body is larger than {limit} bytes")
    return raw


def parse_json(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON value of ``raw``; :class:`BodyError` (400) when it is no JSON (also ``NaN``,
    ``Infinity``, a number too large for a float, a lone UTF-16 surrogate such as ``"\\ud800"``,
    which is no character) or nests deeper than ``max_depth``."""
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError as e:
        raise BodyError(400, f"the body nests deeper than {max_depth} levels") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise BodyError(400, f"the body is not JSON: {e}") from e
    if depth(value, max_depth) > max_depth:
        raise BodyError(400, f"the body nests deeper than {max_depth} levels")
    bad = lone_surrogate(value)
    if bad is not None:
        raise BodyError(400, f"the body is not JSON: {bad!r} holds a lone UTF-16 surrogate, no character")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is no JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:20]} is too large")
    return value


def depth(value: Any, stop: int) -> int:
    """How deep ``value`` nests (a scalar: 0, ``[]``: 1), counted without recursion; the count
    stops once it passes ``stop``."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(value, 0)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict | list):
            level += 1
            deepest = max(deepest, level)
            if deepest > stop:
                return deepest
            todo.extend((child, level) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def lone_surrogate(value: Any) -> str | None:
    """The first string (key or value) of ``value`` that cannot be encoded as UTF-8 (it holds a
    lone surrogate, which JSON's and YAML's escapes can spell), shortened; None when there is none.
    Walked without recursion."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return item[:40]
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return None
