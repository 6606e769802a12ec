"""deletion: a request's tombstone (deleted_at) and the retention index

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Additive: one nullable column and two indexes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import imgbatch.ledger.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(
            sa.Column("deleted_at", imgbatch.ledger.models.UTCDateTime(), nullable=True)
        )
        batch.create_index("ix_requests_deleted_at", ["deleted_at"], unique=False)
        batch.create_index("ix_requests_completed_at", ["completed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_index("ix_requests_completed_at")
        batch.drop_index("ix_requests_deleted_at")
        batch.drop_column("deleted_at")
