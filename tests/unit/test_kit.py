"""The shared driver helpers of platforms.kit that no single driver test covers on every branch."""

from __future__ import annotations

import pytest

from platforms.contract import PermanentError, PlatformConfigError, PlatformUser, RetryableError
from platforms.kit import (
    ConflictError,
    NotFoundError,
    Pages,
    SharedClient,
    UserIndex,
    error_for_status,
    parse_retry_after,
    retry_after,
)


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


def test_error_for_status_maps_the_common_statuses() -> None:
    assert type(error_for_status(404, "m")) is NotFoundError
    assert type(error_for_status(409, "m")) is ConflictError
    throttled = error_for_status(429, "m", 2.5)
    assert isinstance(throttled, RetryableError)
    assert throttled.retry_after == 2.5
    assert isinstance(error_for_status(503, "m"), RetryableError)
    assert type(error_for_status(401, "m")) is PlatformConfigError
    assert type(error_for_status(403, "m")) is PermanentError
    assert str(error_for_status(400, "the message")) == "the message"


async def test_user_index_reads_once_and_matches_case_insensitively() -> None:
    loads = 0

    async def load() -> list[PlatformUser]:
        nonlocal loads
        loads += 1
        return [PlatformUser("2", "Bob@x"), PlatformUser("1", "bob@X"), PlatformUser("3", "")]

    index = UserIndex(load)
    assert await index.lookup([]) == {}
    assert loads == 0
    found = await index.lookup(["BOB@x", "carol"])
    assert found == {"BOB@x": (PlatformUser("1", "bob@X"), PlatformUser("2", "Bob@x")), "carol": ()}
    index.add(PlatformUser("4", "Carol"))
    assert await index.lookup(["carol"]) == {"carol": (PlatformUser("4", "Carol"),)}
    assert loads == 1


def test_shared_client_is_made_once_and_taken_back() -> None:
    made: list[object] = []

    def make() -> object:
        made.append(object())
        return made[-1]

    shared = SharedClient(make)
    assert shared.take() is None
    first = shared.get()
    assert shared.get() is first
    assert shared.take() is first
    assert shared.get() is not first
    assert len(made) == 2
