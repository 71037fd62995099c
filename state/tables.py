"""The state store's tables. Changes go through an Alembic migration in ``state/migrations``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


Timestamp = Annotated[datetime, mapped_column(DateTime(timezone=True))]
"""A point in time, stored with its time zone (always UTC); ``Mapped[Timestamp | None]`` is nullable."""


class TenantEventColumns:
    """The first columns of a tenant's runs and warnings: a serial id, the tenant, its platform."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, sort_order=-1)
    tenant: Mapped[str] = mapped_column(String(600), sort_order=-1)
    platform: Mapped[str] = mapped_column(String(200), sort_order=-1)


class OwnedGroupRow(Base):
    """A group this replicator created (or started to create) for a tenant."""

    __tablename__ = "owned_groups"
    __table_args__ = (UniqueConstraint("platform", "tenant", "name", name="uq_owned_group"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(200))
    tenant: Mapped[str] = mapped_column(String(600), index=True)
    alias: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(1024))
    platform_id: Mapped[str | None] = mapped_column(String(600), nullable=True)
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    members: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    """Platform user ids this replicator added (migration 0004)."""
    project_role: Mapped[str] = mapped_column(String(200), default="", server_default="")
    """The meshProject role the group stands for ("" where not yet recorded; migration 0010)."""
    state: Mapped[str] = mapped_column(String(20))  # pending | active
    created_at: Mapped[Timestamp]
    updated_at: Mapped[Timestamp]


class TenantRow(Base):
    """The last known life-cycle state of a tenant (Active, Deleted)."""

    __tablename__ = "tenants"

    key: Mapped[str] = mapped_column(String(600), primary_key=True)
    platform: Mapped[str] = mapped_column(String(200))
    local_id: Mapped[str] = mapped_column(String(600))
    status: Mapped[str] = mapped_column(String(20))
    updated_at: Mapped[Timestamp]


class RunRow(TenantEventColumns, Base):
    """One reconcile (or plan) of one tenant."""

    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_tenant_started", "tenant", "started_at"),)

    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[Timestamp]
    finished_at: Mapped[Timestamp | None]
    outcome: Mapped[str] = mapped_column(String(20))  # running | converged | failed | interrupted
    changes_applied: Mapped[int] = mapped_column(Integer, default=0)
    changes_pending: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class AuditRow(Base):
    """One applied (or attempted) change: the audit trail."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), nullable=True, index=True)
    at: Mapped[Timestamp]
    tenant: Mapped[str] = mapped_column(String(600), index=True)
    platform: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40))
    group_name: Mapped[str] = mapped_column(String(1024))
    subject: Mapped[str] = mapped_column(String(1024))
    outcome: Mapped[str] = mapped_column(String(20))  # started | applied | failed
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class WarningRow(TenantEventColumns, Base):
    """A replication warning of a tenant, open until its cause is gone."""

    __tablename__ = "warnings"
    __table_args__ = (Index("ix_warnings_tenant_open", "tenant", "cleared_at"),)

    code: Mapped[str] = mapped_column(String(60))
    subject: Mapped[str] = mapped_column(String(1024))
    message: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[Timestamp]
    last_seen: Mapped[Timestamp]
    cleared_at: Mapped[Timestamp | None]


class CreatedUserRow(Base):
    """A platform user the replicator created (an OpenStack federated user, an Entra ID guest), and
    since when no binding needs it (``deprovisionCreatedUsers``; migration 0011)."""

    __tablename__ = "created_users"

    platform: Mapped[str] = mapped_column(String(200), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(600), primary_key=True)
    euid: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[Timestamp]
    unneeded_since: Mapped[Timestamp | None]


class SeenAssertionRow(Base):
    """A SAML assertion accepted once, kept until it expires: the same one again is a replay
    (migration 0012)."""

    __tablename__ = "seen_assertions"

    key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    """``<provider>:<assertion ID>``."""
    expires_at: Mapped[Timestamp] = mapped_column(index=True)


class LookupRow(Base):
    """A found platform user for a transformed euid (not-found is never cached)."""

    __tablename__ = "lookup_cache"

    platform: Mapped[str] = mapped_column(String(200), primary_key=True)
    euid: Mapped[str] = mapped_column(String(1024), primary_key=True)
    users: Mapped[list[list[str]]] = mapped_column(JSON)
    fetched_at: Mapped[Timestamp]


class LeaseRow(Base):
    """Which replica works on a tenant, until when."""

    __tablename__ = "leases"

    tenant: Mapped[str] = mapped_column(String(600), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[Timestamp]
    token: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Fencing token: larger for each new holder; a change is applied only while it still holds."""


class MeshObjectRow(Base):
    """A meshObject kept in the store (migration 0005): written by the object API or an identity
    source (OIDC logins, LDAP, SCIM). ``source`` owns it: only that source changes or deletes it."""

    __tablename__ = "mesh_objects"

    kind: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(600), primary_key=True)
    """``object_key`` of the object: name, ``workspace/name``, ``workspace/project/name``, ..."""
    source: Mapped[str] = mapped_column(String(200), index=True)
    """``api``, ``oidc:<issuer name>``, ``ldap:<connector name>``, ``scim``."""
    external_id: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    """The source's own id of the object (LDAP DN, SCIM externalId), if any."""
    document: Mapped[dict[str, object]] = mapped_column(JSON)
    """The object as in an inventory file (camelCase keys)."""
    deprovisioned_at: Mapped[Timestamp | None]
    """A user its source no longer has: kept (bindings may still name it) but out of the inventory."""
    revision: Mapped[int] = mapped_column(BigInteger, default=1)
    """Incremented on each change (SCIM's version, HTTP ETags)."""
    created_at: Mapped[Timestamp]
    updated_at: Mapped[Timestamp]


class CounterRow(Base):
    """Named counters; ``objects`` grows with every change of the stored meshObjects, so a daemon
    (any replica) sees that its inventory changed."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class ApiKeyRow(Base):
    """An API key of the daemon's HTTP API, created by ``replicator apikey create``. Only the
    SHA-256 of the secret is kept (the secret is 256 random bits; it is shown once)."""

    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[Timestamp]
    last_used_at: Mapped[Timestamp | None]


class SourceSyncRow(Base):
    """The last sync of an identity source (LDAP connector): when, how it ended, what it read."""

    __tablename__ = "source_syncs"

    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    started_at: Mapped[Timestamp]
    finished_at: Mapped[Timestamp | None]
    outcome: Mapped[str] = mapped_column(String(20))  # running | complete | failed
    users: Mapped[int] = mapped_column(Integer, default=0)
    groups: Mapped[int] = mapped_column(Integer, default=0)
    deprovisioned: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_complete_at: Mapped[Timestamp | None]


class ScimResourceRow(Base):
    """A resource the SCIM service provider holds (migration 0006): the whole SCIM document as the
    client wrote it (without ``meta`` and write-only attributes). The meshUser/meshUserGroup it
    maps to is a MeshObjectRow of source ``scim`` with the same key (the SCIM id)."""

    __tablename__ = "scim_resources"
    __table_args__ = (
        Index("ix_scim_resources_name_key", "resource_type", "name_key"),
        Index("ix_scim_resources_created", "resource_type", "created_at", "id"),
    )

    resource_type: Mapped[str] = mapped_column(String(40), primary_key=True)
    """``User`` or ``Group``."""
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    document: Mapped[dict[str, object]] = mapped_column(JSON)
    revision: Mapped[int] = mapped_column(BigInteger, default=1)
    """Incremented on each change: the resource's ``meta.version`` (weak ETag)."""
    name_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    """What the resource is unique by, as the SCIM service compares it (migration 0008: a User's
    userName, folded); None for a resource unique by nothing."""
    created_at: Mapped[Timestamp]
    updated_at: Mapped[Timestamp]


class QuotaShareRow(Base):
    """A replica working against a platform quota (migration 0007): the replicas with a live row
    for one quota owner split that quota's request rate between them."""

    __tablename__ = "quota_shares"

    owner: Mapped[str] = mapped_column(String(600), primary_key=True)
    """The quota owner (``Driver.quota_owner``: what the platform's request quota belongs to)."""
    replica: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[Timestamp]
