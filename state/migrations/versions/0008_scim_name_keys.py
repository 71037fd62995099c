"""The name a SCIM resource is unique by (a User's userName, folded for comparison), in an indexed
column: a create looks its userName up instead of reading every kept User.

The key of the Users kept before this revision is computed here with the rule of this revision
(Unicode NFKC, case-folded, outer white space removed); the SCIM service computes it for every
write from now on (``replicator/sources/scim/mapping.py``, ``name_key``).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _fold(name: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold()).strip()


def upgrade() -> None:
    op.add_column("scim_resources", sa.Column("name_key", sa.Text(), nullable=True))
    op.create_index("ix_scim_resources_name_key", "scim_resources", ["resource_type", "name_key"])
    table = sa.table(
        "scim_resources",
        sa.column("resource_type", sa.String),
        sa.column("id", sa.String),
        sa.column("document", sa.JSON),
        sa.column("name_key", sa.Text),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(table.c.id, table.c.document).where(table.c.resource_type == "User"))
    for id_, document in rows.fetchall():
        name = document.get("userName") if isinstance(document, dict) else None
        if isinstance(name, str):
            conn.execute(
                table.update()
                .where(table.c.resource_type == "User", table.c.id == id_)
                .values(name_key=_fold(name))
            )


def downgrade() -> None:
    op.drop_index("ix_scim_resources_name_key", "scim_resources")
    op.drop_column("scim_resources", "name_key")
