"""outcomes: per-image quality; a request's resize box and quality=auto

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(
            sa.Column("auto_quality", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("max_width", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_height", sa.Integer(), nullable=True))
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("quality", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("quality")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("max_height")
        batch.drop_column("max_width")
        batch.drop_column("auto_quality")
