"""The user-lookup cache: the platform users found for a transformed euid, and when (a not-found
euid is never cached)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from state.db import Database, aware, chunks, utcnow
from state.tables import LookupRow


class LookupStore(Database):
    """The lookup cache of ``Store``."""

    def cached_lookups(
        self, platform: str, euids: Iterable[str], ttl: timedelta, now: datetime | None = None
    ) -> dict[str, list[tuple[str, str]]]:
        """Fresh cached lookups: transformed euid -> [(platform user id, name), ...]."""
        now = now or utcnow()
        wanted = list(dict.fromkeys(euids))
        found: dict[str, list[tuple[str, str]]] = {}
        with self._tx() as s:
            for chunk in chunks(wanted):
                for r in s.scalars(
                    select(LookupRow).where(LookupRow.platform == platform, LookupRow.euid.in_(chunk))
                ):
                    if now - aware(r.fetched_at) < ttl:
                        found[r.euid] = [(u[0], u[1]) for u in r.users]
        return found

    def store_lookups(
        self, platform: str, results: Mapping[str, Sequence[tuple[str, str]]], now: datetime | None = None
    ) -> None:
        """Remember found users; a not-found euid drops its cached entry."""
        now = now or utcnow()
        with self._tx() as s:
            for euid, users in results.items():
                if not users:
                    s.execute(delete(LookupRow).where(LookupRow.platform == platform, LookupRow.euid == euid))
                    continue
                # An upsert: two tenants' runs may cache the same user at once.
                values = {
                    "platform": platform,
                    "euid": euid,
                    "users": [list(u) for u in users],
                    "fetched_at": now,
                }
                s.execute(self._upsert(LookupRow, values, ("platform", "euid"), ("users", "fetched_at")))

    def forget_lookups(self, platform: str, euids: Iterable[str]) -> None:
        with self._tx() as s:
            s.execute(
                delete(LookupRow).where(LookupRow.platform == platform, LookupRow.euid.in_(list(euids)))
            )
