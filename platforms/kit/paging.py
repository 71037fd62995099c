"""Following a paged list to its end, the same way on every platform: one request per page, a
cursor (page token, next link) that comes back a second time is an error instead of a loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

from platforms.contract import PermanentError

P = TypeVar("P")


class Pages(Generic[P]):
    """The pages of one list: ``async for page in Pages(fetch, next_of, ...)``.

    ``fetch(None)`` reads the first page, ``fetch(cursor)`` the one ``next_of(previous page)``
    named; the iteration ends at the page that names none. Without ``limit`` a repeated cursor
    raises ``PermanentError(repeated)``. With ``limit`` (a scan that is worth only so many calls)
    the iteration also ends, quietly, after ``limit`` pages or at a repeated cursor, and
    :attr:`complete` stays False: the caller drops what it read."""

    def __init__(
        self,
        fetch: Callable[[str | None], Awaitable[P]],
        next_of: Callable[[P], str | None],
        repeated: str,
        limit: int | None = None,
    ) -> None:
        self._fetch = fetch
        self._next_of = next_of
        self._repeated = repeated
        self._limit = limit
        self.complete = False
        """True once the last page was read."""

    async def __aiter__(self) -> AsyncIterator[P]:
        seen: set[str] = set()
        cursor: str | None = None
        read = 0
        while self._limit is None or read < self._limit:
            page = await self._fetch(cursor)
            read += 1
            yield page
            cursor = self._next_of(page)
            if not cursor:
                self.complete = True
                return
            if cursor in seen:
                if self._limit is not None:
                    return
                raise PermanentError(self._repeated)
            seen.add(cursor)
