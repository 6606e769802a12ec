"""backend faults: released images wait (retry_at) within a bounded streak; enqueue marks

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

- images.retry_at: a released image is not claimed before it (a backend's fault gave it back);
- images.fault_since / fault_kind: when the image's streak of backend faults began, and of
  which backend, so the bounded retry time survives workers and restarts;
- requests.enqueued: set once the upload's jobs are in the queue, so the sweeper finds a
  request whose enqueue never happened (an API killed right after its commit) at once;
  rows that exist already count as enqueued, as do those written by an older release;
- queue_marks: the sweeper's mark travelling through the queue (FIFO): once it comes out,
  every job enqueued before it has left the queue, and only those images are re-enqueued.

Additive only (nullable columns, a server default, a new table): safe in a rolling deploy.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("retry_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("fault_since", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("fault_kind", sa.String(16), nullable=True))
    with op.batch_alter_table("requests") as batch:
        batch.add_column(
            sa.Column("enqueued", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    op.create_index("ix_requests_enqueued", "requests", ["enqueued", "created_at"])
    marks = op.create_table(
        "queue_marks",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("token", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("sent_depth", sa.Integer(), nullable=True),
        sa.Column("seen_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_queue_marks"),
    )
    op.bulk_insert(marks, [{"id": 1, "token": 0}])


def downgrade() -> None:
    op.drop_table("queue_marks")
    op.drop_index("ix_requests_enqueued", table_name="requests")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("enqueued")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("fault_kind")
        batch.drop_column("fault_since")
        batch.drop_column("retry_at")
