"""Request bodies: the size limit stops reading the stream, the depth limit stops parsing."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from replicator.sources.bodies import MAX_JSON_DEPTH, BodyError, depth, parse_json, read_body, read_limited


def streamed(
    chunks: int, size: int, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[Request, list[int]]:
    """A request whose body arrives in ``chunks`` chunks of ``size`` bytes; the list counts the
    chunks the server asked for."""
    asked: list[int] = []

    async def receive() -> dict[str, Any]:
        asked.append(1)
        more = len(asked) < chunks
        return {"type": "http.request", "body": b"x" * size, "more_body": more}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers or [], "query_string": b""}
    return Request(scope, receive), asked


async def test_a_body_over_the_limit_is_not_read_past_it() -> None:
    request, asked = streamed(chunks=10_000, size=1_000)
    assert await read_body(request, 5_500) is None
    assert len(asked) == 6, "read until the limit was passed, and no further"


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    request, asked = streamed(chunks=1, size=10, headers=[(b"content-length", b"999999")])
    with pytest.raises(BodyError) as e:
        await read_limited(request, 1_000)
    assert e.value.status == 413
    assert asked == []


async def test_a_body_within_the_limit_is_read_whole() -> None:
    request, _ = streamed(chunks=3, size=100)
    assert await read_body(request, 300) == b"x" * 300


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 900, 100_000])
def test_json_nested_deeper_than_the_limit_is_a_400(levels: int) -> None:
    with pytest.raises(BodyError) as e:
        parse_json(b"[" * levels + b"]" * levels)
    assert (e.value.status, e.value.message) == (400, f"the body nests deeper than {MAX_JSON_DEPTH} levels")


def test_json_within_the_limit_is_parsed() -> None:
    body = b'{"a": ' * (MAX_JSON_DEPTH - 1) + b"[1]" + b"}" * (MAX_JSON_DEPTH - 1)
    value = parse_json(body)
    assert depth(value, 1_000) == MAX_JSON_DEPTH
    assert depth([[], {"a": [1]}], 10) == 3
    assert depth("scalar", 10) == 0
    with pytest.raises(BodyError, match="not JSON"):
        parse_json(b"{oops")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b'{"a": NaN}', "NaN is no JSON value"),
        (b'{"a": -Infinity}', "-Infinity is no JSON value"),
        (b'{"a": 1e999}', "too large"),
        (b'{"userName": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"\\udfff": 1}', "lone UTF-16 surrogate"),
    ],
)
def test_what_json_cannot_hold_is_a_400(raw: bytes, why: str) -> None:
    with pytest.raises(BodyError, match=why) as e:
        parse_json(raw)
    assert e.value.status == 400


def test_a_surrogate_pair_is_one_character() -> None:
    assert parse_json(b'{"name": "\\ud83d\\ude00", "n": 1.5}') == {"name": "\U0001f600", "n": 1.5}


def test_an_integer_of_thousands_of_digits_is_a_located_problem_not_a_crash() -> None:
    from replicator.inputs.loader import parse_yaml_bytes

    docs, problems = parse_yaml_bytes(
        b"kind: meshUser\nmetadata:\n  name: " + b"9" * 5000 + b"\n", "org.yaml"
    )
    assert docs == []
    assert [(p.file, p.line) for p in problems] == [("org.yaml", 1)]
    assert "invalid YAML" in problems[0].message
