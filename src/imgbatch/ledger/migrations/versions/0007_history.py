"""history: the uploaded file's name, a final request's summary, the listing indexes

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

Additive: nullable columns, four indexes on `requests` (and `ix_requests_deleted_at` made
partial) (one row per upload, so they
build in about a second per 100,000 requests; writes to `requests` wait meanwhile). Requests
finished before this migration have no summary: history counts their images instead.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_requests_created": ["created_at", "id"],
    "ix_requests_status_created": ["status", "created_at", "id"],
    "ix_requests_owner_created": ["owner", "created_at", "id"],
    "ix_requests_owner_status_created": ["owner", "status", "created_at", "id"],
}


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("filename", sa.Text(), nullable=True))
        batch.add_column(sa.Column("done_images", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("failed_images", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("cancelled_images", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("bytes_in", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("bytes_out", sa.BigInteger(), nullable=True))
    for name, columns in INDEXES.items():
        op.create_index(name, "requests", columns)
    # Partial: an index of every NULL tempted SQLite's planner into reading all of it for
    # `deleted_at IS NULL` (every listing), then sorting; only tombstones are looked up.
    op.drop_index("ix_requests_deleted_at", table_name="requests")
    op.create_index(
        "ix_requests_deleted_at",
        "requests",
        ["deleted_at"],
        sqlite_where=sa.text("deleted_at IS NOT NULL"),
        postgresql_where=sa.text("deleted_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_requests_deleted_at", table_name="requests")
    op.create_index("ix_requests_deleted_at", "requests", ["deleted_at"])
    for name in INDEXES:
        op.drop_index(name, table_name="requests")
    with op.batch_alter_table("requests") as batch:
        for column in (
            "bytes_out",
            "bytes_in",
            "cancelled_images",
            "failed_images",
            "done_images",
            "filename",
        ):
            batch.drop_column(column)
