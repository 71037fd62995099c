"""SCIM resources: what the SCIM 2.0 service provider (``replicator/sources/scim/``) was given,
the whole document as the client wrote it, with a revision (its ``meta.version``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from state.db import Database, chunks, record_of, utcnow
from state.tables import ScimResourceRow


@dataclass(frozen=True)
class ScimResource:
    """A resource of the SCIM service provider (see ``ScimResourceRow``)."""

    resource_type: str
    id: str
    document: Mapping[str, object]
    revision: int
    created_at: datetime
    updated_at: datetime


class ScimStore(Database):
    """The SCIM resources of ``Store``."""

    def scim_resources(
        self, resource_type: str, offset: int = 0, limit: int | None = None
    ) -> list[ScimResource]:
        """The kept resources of ``resource_type`` in the order they were created; ``offset`` and
        ``limit`` select a page of them."""
        with self._tx() as s:
            q = (
                select(ScimResourceRow)
                .where(ScimResourceRow.resource_type == resource_type)
                .order_by(ScimResourceRow.created_at, ScimResourceRow.id)
                .offset(offset)
                .limit(limit)
            )
            return [_scim(r) for r in s.scalars(q)]

    def scim_count(self, resource_type: str) -> int:
        with self._tx() as s:
            q = select(func.count()).where(ScimResourceRow.resource_type == resource_type)
            return int(s.scalar(q) or 0)

    def scim_resource(self, resource_type: str, id: str) -> ScimResource | None:
        with self._tx() as s:
            row = s.get(ScimResourceRow, (resource_type, id))
            return _scim(row) if row is not None else None

    def scim_ids_named(self, resource_type: str, name_key: str) -> list[str]:
        """The ids of the kept resources of ``resource_type`` whose name key is ``name_key`` (an
        indexed lookup; see ``put_scim_resources``)."""
        with self._tx() as s:
            q = select(ScimResourceRow.id).where(
                ScimResourceRow.resource_type == resource_type, ScimResourceRow.name_key == name_key
            )
            return sorted(s.scalars(q))

    def scim_ids_among(self, resource_type: str, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` are kept resources of ``resource_type`` (an indexed lookup)."""
        found: set[str] = set()
        with self._tx() as s:
            for chunk in chunks(sorted(set(ids))):
                q = select(ScimResourceRow.id).where(
                    ScimResourceRow.resource_type == resource_type, ScimResourceRow.id.in_(chunk)
                )
                found.update(s.scalars(q))
        return found

    def put_scim_resources(
        self,
        puts: Sequence[tuple[str, str, Mapping[str, object]]],
        deletes: Iterable[tuple[str, str]] = (),
        *,
        name_keys: Mapping[tuple[str, str], str | None] | None = None,
    ) -> dict[tuple[str, str], ScimResource]:
        """Create or replace (resource_type, id, document) and delete (resource_type, id), in one
        transaction; a changed document gets the next revision. ``name_keys``: (resource_type, id)
        -> what the resource is unique by, as the caller compares names (looked up by
        :meth:`scim_ids_named`). Returns the written resources."""
        now = utcnow()
        out: dict[tuple[str, str], ScimResource] = {}
        keys = name_keys or {}
        with self._tx() as s:
            for resource_type, id, document in puts:
                row = s.get(ScimResourceRow, (resource_type, id))
                name_key = keys.get((resource_type, id))
                if row is None:
                    row = ScimResourceRow(
                        resource_type=resource_type,
                        id=id,
                        document=dict(document),
                        revision=1,
                        name_key=name_key,
                        created_at=now,
                        updated_at=now,
                    )
                    s.add(row)
                elif row.document != dict(document):
                    row.document, row.revision, row.updated_at = dict(document), row.revision + 1, now
                if row.name_key != name_key:
                    row.name_key = name_key
                s.flush()
                out[(resource_type, id)] = _scim(row)
            for resource_type, id in deletes:
                row = s.get(ScimResourceRow, (resource_type, id))
                if row is not None:
                    s.delete(row)
        return out


def _scim(r: ScimResourceRow) -> ScimResource:
    return record_of(ScimResource, r)
