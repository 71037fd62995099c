"""Users matched by reading the whole directory once: what a driver does when its platform can list
every user cheaply (AWS identity store, Keystone)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence

from platforms.contract import PlatformUser


class UserIndex:
    """Users by their lookup attribute (the :attr:`PlatformUser.name`), casefolded. ``load`` reads
    every user once per driver instance, at the first lookup; every later lookup answers from the
    index without a call."""

    def __init__(self, load: Callable[[], Awaitable[Iterable[PlatformUser]]]) -> None:
        self._load = load
        self._lock = asyncio.Lock()
        self._by_key: dict[str, list[PlatformUser]] | None = None

    async def lookup(self, euids: Sequence[str]) -> dict[str, tuple[PlatformUser, ...]]:
        """For each euid, every user whose name equals it case-insensitively (sorted)."""
        if not euids:
            return {}
        async with self._lock:
            if self._by_key is None:
                index: dict[str, list[PlatformUser]] = {}
                for user in await self._load():
                    if user.name:
                        index.setdefault(user.name.casefold(), []).append(user)
                self._by_key = index
        found = self._by_key
        return {euid: tuple(sorted(found.get(euid.casefold(), ()))) for euid in euids}

    def add(self, user: PlatformUser) -> None:
        """A user created since the index was read (nothing to do before it is)."""
        if self._by_key is not None:
            self._by_key.setdefault(user.name.casefold(), []).append(user)
