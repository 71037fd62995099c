"""The meshProject role each owned group stands for: a group renamed through its landing zone's
platformGroupAlias is told from a removal by it (the deletion guard counts access lost, not
groups renamed). "" for the groups recorded before: the next applying run fills it in.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("owned_groups") as batch:
        batch.add_column(sa.Column("project_role", sa.String(200), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("owned_groups") as batch:
        batch.drop_column("project_role")
