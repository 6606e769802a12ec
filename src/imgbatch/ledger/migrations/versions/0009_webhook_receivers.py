"""webhook receivers: a secret per API key and per open upload, receivers paused as a whole

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

Additive: two tables, two nullable columns and an index. Existing pending deliveries get
their receiver (`scheme://host:port`) filled in; older ones keep NULL (never paused).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic import op

import imgbatch.ledger.models

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        port = 0
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"[:300]


def upgrade() -> None:
    op.create_table(
        "webhook_secrets",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text(), nullable=True),
        sa.Column("previous_until", imgbatch.ledger.models.UTCDateTime(), nullable=True),
        sa.Column("created_at", imgbatch.ledger.models.UTCDateTime(), nullable=False),
        sa.Column("rotated_at", imgbatch.ledger.models.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_webhook_secrets")),
    )
    op.create_table(
        "webhook_receivers",
        sa.Column("origin", sa.String(length=300), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("paused_until", imgbatch.ledger.models.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", imgbatch.ledger.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("origin", name=op.f("pk_webhook_receivers")),
    )
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("webhook_secret", sa.Text(), nullable=True))
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.add_column(sa.Column("receiver", sa.String(length=300), nullable=True))
    op.create_index("ix_webhook_deliveries_receiver", "webhook_deliveries", ["receiver", "status"])
    deliveries = sa.table(
        "webhook_deliveries",
        sa.column("id", sa.Integer()),
        sa.column("url", sa.Text()),
        sa.column("status", sa.String()),
        sa.column("receiver", sa.String()),
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(deliveries.c.id, deliveries.c.url).where(
            deliveries.c.status.in_(("pending", "delivering"))
        )
    ).all()
    for row in rows:
        conn.execute(
            deliveries.update().where(deliveries.c.id == row.id).values(receiver=_origin(row.url))
        )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_receiver", table_name="webhook_deliveries")
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_column("receiver")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("webhook_secret")
    op.drop_table("webhook_receivers")
    op.drop_table("webhook_secrets")
