"""The shared driver helpers of platforms.kit that no single driver test covers on every branch."""

from __future__ import annotations

import pytest

from platforms.contract import PermanentError
from platforms.kit import Pages, parse_retry_after, retry_after


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after(7, now) == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now) == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now) == 0.0  # in the past
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("", now) is None
    assert parse_retry_after(None, now) is None


def test_retry_after_finds_the_header_in_any_case_and_the_rate_limit_reset() -> None:
    assert retry_after({"Retry-After": "3"}) == 3.0
    assert retry_after({"retry-after": "4"}) == 4.0
    assert retry_after(None) is None
    assert retry_after(object()) is None  # no headers to read
    assert retry_after({"x-ratelimit-reset": "1"}) is None
    assert retry_after({"x-ratelimit-reset": "1"}, rate_limit_reset=True) == 0.0  # long past
    assert retry_after({"retry-after": "x", "x-ratelimit-reset": "1"}, rate_limit_reset=True) is None


async def test_pages_follow_the_cursor_and_refuse_a_repeated_one() -> None:
    book = {None: ("a", "1"), "1": ("b", "2"), "2": ("c", None)}

    async def fetch(cursor: str | None) -> tuple[str, str | None]:
        return book[cursor]

    pages = Pages(fetch, lambda p: p[1], "repeated")
    assert [p[0] async for p in pages] == ["a", "b", "c"]
    assert pages.complete

    book["2"] = ("c", "1")
    with pytest.raises(PermanentError, match="repeated"):
        [p async for p in Pages(fetch, lambda p: p[1], "repeated")]

    limited = Pages(fetch, lambda p: p[1], "repeated", limit=2)
    assert [p[0] async for p in limited] == ["a", "b"]
    assert not limited.complete
    looping = Pages(fetch, lambda p: p[1], "repeated", limit=10)
    assert [p[0] async for p in looping] == ["a", "b", "c"]
    assert not looping.complete
