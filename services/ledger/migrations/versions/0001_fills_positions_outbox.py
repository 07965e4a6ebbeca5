"""Fills, the latest position per bot and mode, and the outbox.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db import ExactDecimal, UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _missing(table: str) -> bool:
    # A database made by the walking skeleton (create_all, no version table) already has them.
    return not sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    if _missing("ledger_fills"):
        op.create_table(
            "ledger_fills",
            sa.Column("trade_id", sa.String(128), primary_key=True),
            sa.Column("bot_id", sa.String(64), nullable=False, index=True),
            sa.Column("mode", sa.String(16), nullable=False),
            sa.Column("product_id", sa.String(64), nullable=False),
            sa.Column("intent_id", sa.String(64), nullable=False),
            sa.Column("client_order_id", sa.String(64), nullable=False, index=True),
            sa.Column("side", sa.String(4), nullable=False),
            sa.Column("price", ExactDecimal(), nullable=False),
            sa.Column("size", ExactDecimal(), nullable=False),
            sa.Column("fee", ExactDecimal(), nullable=False),
            sa.Column("liquidity", sa.String(8), nullable=False),
            sa.Column("time", UtcDateTime(), nullable=False),
            sa.Column("order_event_id", sa.String(200), nullable=False),
        )
    if _missing("ledger_positions"):
        op.create_table(
            "ledger_positions",
            sa.Column("bot_id", sa.String(64), primary_key=True),
            sa.Column("mode", sa.String(16), primary_key=True),
            sa.Column("sequence", sa.Integer(), nullable=False),
            sa.Column("payload", sa.Text(), nullable=False),
        )
    if _missing("outbox"):
        op.create_table(
            "outbox",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("message_id", sa.String(200), nullable=False, unique=True, index=True),
            sa.Column("subject", sa.String(300), nullable=False),
            sa.Column("payload", sa.Text(), nullable=False),
            sa.Column("kv_bucket", sa.String(100), nullable=True),
            sa.Column("kv_key", sa.String(200), nullable=True),
            sa.Column("created_at", UtcDateTime(), nullable=False),
            sa.Column("published_at", UtcDateTime(), nullable=True, index=True),
        )


def downgrade() -> None:
    for table in ("outbox", "ledger_positions", "ledger_fills"):
        op.drop_table(table)
