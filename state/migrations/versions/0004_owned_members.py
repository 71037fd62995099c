"""Members this replicator added to each owned group, for platforms whose memberships carry no
marker of ownership (Cloud Foundry roles): only those are ever removed there.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("owned_groups") as batch:
        batch.add_column(sa.Column("members", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("owned_groups") as batch:
        batch.drop_column("members")
