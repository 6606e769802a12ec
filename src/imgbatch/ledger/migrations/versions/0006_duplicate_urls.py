"""duplicate URLs: a request's repeated URL is fetched once, its other positions follow it

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

- images.source_image_id: set on a later position whose URL (normalised) an earlier
  position of the same request already names; such an image is never claimed, it takes
  its source's result when the source is recorded;
- images.followers: on a source, how many positions follow it (0 for most images), so
  the worker copies a result only where there is something to copy.

Additive only (a nullable column, a column with a server default, an index): safe in a
rolling deploy. An older release ignores both, fetching duplicates as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("source_image_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("followers", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_images_source_image_id", "images", ["source_image_id"])


def downgrade() -> None:
    op.drop_index("ix_images_source_image_id", table_name="images")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("followers")
        batch.drop_column("source_image_id")
