"""The user-lookup cache: the platform users found for a transformed euid, and when (a not-found
euid is never cached); and the users the replicator created itself."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from state.db import Database, aware, chunks, record_of, utcnow
from state.tables import CreatedUserRow, LookupRow


@dataclass(frozen=True)
class CreatedUserRecord:
    platform: str
    user_id: str
    euid: str
    created_at: datetime
    unneeded_since: datetime | None


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

    # --- users the replicator created -------------------------------------------------------------

    def record_created_user(
        self, platform: str, user_id: str, euid: str, now: datetime | None = None
    ) -> None:
        """A user this replicator created (recorded once; a second record keeps the first time)."""
        values = {"platform": platform, "user_id": user_id, "euid": euid, "created_at": now or utcnow()}
        with self._tx() as s:
            s.execute(self._upsert(CreatedUserRow, values, ("platform", "user_id"), ("euid",)))

    def created_users(self, platform: str) -> list[CreatedUserRecord]:
        with self._tx() as s:
            q = select(CreatedUserRow).where(CreatedUserRow.platform == platform)
            rows = s.scalars(q.order_by(CreatedUserRow.euid))
            return [record_of(CreatedUserRecord, r) for r in rows]

    def mark_unneeded(self, platform: str, user_ids: Iterable[str], since: datetime | None) -> None:
        """Record since when no binding needs these users (None: needed again). Only a user not
        marked yet gets a time: the first run that found it unneeded counts."""
        ids = list(user_ids)
        if not ids:
            return
        where = [CreatedUserRow.platform == platform, CreatedUserRow.user_id.in_(ids)]
        if since is not None:
            where.append(CreatedUserRow.unneeded_since.is_(None))
        with self._tx() as s:
            s.execute(update(CreatedUserRow).where(*where).values(unneeded_since=since))

    def forget_created_user(self, platform: str, user_id: str) -> None:
        with self._tx() as s:
            s.execute(
                delete(CreatedUserRow).where(
                    CreatedUserRow.platform == platform, CreatedUserRow.user_id == user_id
                )
            )
