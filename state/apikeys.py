"""API keys of the daemon's HTTP API (``replicator apikey create``): only the SHA-256 of each
secret is kept."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from state.db import Database, StoreError, record_of, utcnow
from state.tables import ApiKeyRow


@dataclass(frozen=True)
class ApiKeyRecord:
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None


class ApiKeyStore(Database):
    """The API keys of ``Store``."""

    def create_api_key(self, name: str, secret_sha256: str, scopes: Iterable[str]) -> None:
        """Raises StoreError when a key of that name exists."""
        with self._tx() as s:
            if s.get(ApiKeyRow, name) is not None:
                raise StoreError(f"an API key named {name!r} exists: revoke it first")
            s.add(
                ApiKeyRow(
                    name=name, secret_sha256=secret_sha256, scopes=sorted(set(scopes)), created_at=utcnow()
                )
            )

    def api_key_by_hash(self, secret_sha256: str) -> ApiKeyRecord | None:
        with self._tx() as s:
            row = s.scalars(select(ApiKeyRow).where(ApiKeyRow.secret_sha256 == secret_sha256)).first()
            return _api_key(row) if row is not None else None

    def touch_api_key(self, name: str) -> None:
        with self._tx() as s:
            s.execute(update(ApiKeyRow).where(ApiKeyRow.name == name).values(last_used_at=utcnow()))

    def api_keys(self) -> list[ApiKeyRecord]:
        with self._tx() as s:
            return [_api_key(r) for r in s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.name))]

    def revoke_api_key(self, name: str) -> bool:
        with self._tx() as s:
            row = s.get(ApiKeyRow, name)
            if row is None:
                return False
            s.delete(row)
            return True


def _api_key(r: ApiKeyRow) -> ApiKeyRecord:
    return record_of(ApiKeyRecord, r, scopes=tuple(r.scopes))
