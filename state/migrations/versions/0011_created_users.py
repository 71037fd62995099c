"""The platform users the replicator created, for deprovisioning them once no binding needs them
(``deprovisionCreatedUsers``). Users created before this revision are not known as ours: they are
never deprovisioned.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "created_users",
        sa.Column("platform", sa.String(200), primary_key=True),
        sa.Column("user_id", sa.String(600), primary_key=True),
        sa.Column("euid", sa.String(1024), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("unneeded_since", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("created_users")
