"""lifecycle: cancel and retry (a request's runs, one webhook event per run)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Additive for a rolling deploy: new nullable/defaulted columns; the webhook uniqueness is
relaxed from one event per (request, type) to one per (request, type, run), which old code
(always run 1) satisfies too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import imgbatch.ledger.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(
            sa.Column("cancelled_at", imgbatch.ledger.models.UTCDateTime(), nullable=True)
        )
        batch.add_column(sa.Column("runs", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.add_column(sa.Column("run", sa.Integer(), nullable=False, server_default="1"))
        batch.drop_constraint("uq_webhook_deliveries_request_id", type_="unique")
        batch.create_unique_constraint(
            "uq_webhook_deliveries_request_event_run", ["request_id", "event_type", "run"]
        )


def downgrade() -> None:
    # Only the first run's event fits the old uniqueness.
    op.execute("DELETE FROM webhook_deliveries WHERE run > 1")
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_constraint("uq_webhook_deliveries_request_event_run", type_="unique")
        batch.create_unique_constraint(
            "uq_webhook_deliveries_request_id", ["request_id", "event_type"]
        )
        batch.drop_column("run")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("runs")
        batch.drop_column("cancelled_at")
