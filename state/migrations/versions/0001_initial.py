"""The first tables: owned groups, tenants, runs, audit, warnings, lookup cache.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "owned_groups",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("platform", sa.String(200), nullable=False),
        sa.Column("tenant", sa.String(600), nullable=False),
        sa.Column("alias", sa.String(200), nullable=False),
        sa.Column("name", sa.String(1024), nullable=False),
        sa.Column("platform_id", sa.String(600), nullable=True),
        sa.Column("roles", sa.JSON, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("platform", "tenant", "name", name="uq_owned_group"),
    )
    op.create_index("ix_owned_groups_tenant", "owned_groups", ["tenant"])
    op.create_table(
        "tenants",
        sa.Column("key", sa.String(600), primary_key=True),
        sa.Column("platform", sa.String(200), nullable=False),
        sa.Column("local_id", sa.String(600), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant", sa.String(600), nullable=False),
        sa.Column("platform", sa.String(200), nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("changes_applied", sa.Integer, nullable=False),
        sa.Column("changes_pending", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_runs_tenant_started", "runs", ["tenant", "started_at"])
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("tenant", sa.String(600), nullable=False),
        sa.Column("platform", sa.String(200), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("group_name", sa.String(1024), nullable=False),
        sa.Column("subject", sa.String(1024), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_audit_run_id", "audit", ["run_id"])
    op.create_index("ix_audit_tenant", "audit", ["tenant"])
    op.create_table(
        "warnings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant", sa.String(600), nullable=False),
        sa.Column("platform", sa.String(200), nullable=False),
        sa.Column("code", sa.String(60), nullable=False),
        sa.Column("subject", sa.String(1024), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("first_seen", TS, nullable=False),
        sa.Column("last_seen", TS, nullable=False),
        sa.Column("cleared_at", TS, nullable=True),
    )
    op.create_index("ix_warnings_tenant_open", "warnings", ["tenant", "cleared_at"])
    op.create_table(
        "lookup_cache",
        sa.Column("platform", sa.String(200), primary_key=True),
        sa.Column("euid", sa.String(1024), primary_key=True),
        sa.Column("users", sa.JSON, nullable=False),
        sa.Column("fetched_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("lookup_cache", "warnings", "audit", "runs", "tenants", "owned_groups"):
        op.drop_table(table)
