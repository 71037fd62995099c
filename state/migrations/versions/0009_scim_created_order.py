"""An index on the order SCIM resources are listed in (resource type, creation time, id): a page
of a list reads its rows, instead of sorting every kept resource of the type for each page.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_scim_resources_created", "scim_resources", ["resource_type", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_scim_resources_created", "scim_resources")
