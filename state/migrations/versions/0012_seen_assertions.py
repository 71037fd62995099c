"""SAML assertions accepted once, until they expire: a replay on any replica is refused.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seen_assertions",
        sa.Column("key", sa.String(1024), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_seen_assertions_expires_at", "seen_assertions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_seen_assertions_expires_at", table_name="seen_assertions")
    op.drop_table("seen_assertions")
