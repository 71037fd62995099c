"""The replicas working against each platform quota, so that replicas on one PostgreSQL split a
platform's request rate instead of each sending the whole of it.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quota_shares",
        sa.Column("owner", sa.String(600), primary_key=True),
        sa.Column("replica", sa.String(200), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("quota_shares")
