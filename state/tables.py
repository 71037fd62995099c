"""The state store's tables. Changes go through an Alembic migration in ``state/migrations``."""

from __future__ import annotations

from datetime import datetime

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
    state: Mapped[str] = mapped_column(String(20))  # pending | active
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TenantRow(Base):
    """The last known life-cycle state of a tenant (Active, Deleted)."""

    __tablename__ = "tenants"

    key: Mapped[str] = mapped_column(String(600), primary_key=True)
    platform: Mapped[str] = mapped_column(String(200))
    local_id: Mapped[str] = mapped_column(String(600))
    status: Mapped[str] = mapped_column(String(20))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RunRow(Base):
    """One reconcile (or plan) of one tenant."""

    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_tenant_started", "tenant", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(600))
    platform: Mapped[str] = mapped_column(String(200))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    outcome: Mapped[str] = mapped_column(String(20))  # running | converged | failed | interrupted
    changes_applied: Mapped[int] = mapped_column(Integer, default=0)
    changes_pending: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class AuditRow(Base):
    """One applied (or attempted) change: the audit trail."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), nullable=True, index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    tenant: Mapped[str] = mapped_column(String(600), index=True)
    platform: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40))
    group_name: Mapped[str] = mapped_column(String(1024))
    subject: Mapped[str] = mapped_column(String(1024))
    outcome: Mapped[str] = mapped_column(String(20))  # started | applied | failed
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class WarningRow(Base):
    """A replication warning of a tenant, open until its cause is gone."""

    __tablename__ = "warnings"
    __table_args__ = (Index("ix_warnings_tenant_open", "tenant", "cleared_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(600))
    platform: Mapped[str] = mapped_column(String(200))
    code: Mapped[str] = mapped_column(String(60))
    subject: Mapped[str] = mapped_column(String(1024))
    message: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cleared_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LookupRow(Base):
    """A found platform user for a transformed euid (not-found is never cached)."""

    __tablename__ = "lookup_cache"

    platform: Mapped[str] = mapped_column(String(200), primary_key=True)
    euid: Mapped[str] = mapped_column(String(1024), primary_key=True)
    users: Mapped[list[list[str]]] = mapped_column(JSON)
    fetched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LeaseRow(Base):
    """Which replica works on a tenant, until when."""

    __tablename__ = "leases"

    tenant: Mapped[str] = mapped_column(String(600), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    token: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Fencing token: larger for each new holder; a change is applied only while it still holds."""
