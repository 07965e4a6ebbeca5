"""Fills keyed by the exchange's entry id, booked in the executor's sequence; order statuses;
decimals without a scale cap.

The fills table is rebuilt: its key was the trade id, which Coinbase repeats for adjustments.
Fills already booked keep their facts, get their trade id as key and no sequence, and are
numbered in the order the ledger booked them before (time, then trade id). PostgreSQL columns
become ``NUMERIC`` without precision or scale: a fee of 1E-19 is no longer stored as 0.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db import ExactDecimal, UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MONEY = ("price", "size", "fee")
KEPT = ("trade_id", "bot_id", "mode", "product_id", "intent_id", "client_order_id", "side",
        "price", "size", "fee", "liquidity", "time", "order_event_id")  # fmt: skip


def _fills_table(name: str) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("fill_key", sa.String(128), nullable=False, unique=True),
        sa.Column("trade_id", sa.String(128), nullable=False, index=True),
        sa.Column("entry_id", sa.String(128), nullable=True),
        sa.Column("trade_type", sa.String(16), nullable=False),
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
        sa.Column("sequence", sa.Integer(), nullable=True),
        sa.Column("fill_index", sa.Integer(), nullable=False),
    )


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    columns = {column["name"] for column in inspector.get_columns("ledger_fills")}
    if "fill_key" not in columns:
        for index in inspector.get_indexes("ledger_fills"):
            if index["name"]:  # every index the 0001 schema made has a name
                op.drop_index(index["name"], table_name="ledger_fills")
        op.rename_table("ledger_fills", "ledger_fills_0001")
        _fills_table("ledger_fills")
        kept = ", ".join(KEPT)
        op.execute(
            f"INSERT INTO ledger_fills (fill_key, entry_id, trade_type, sequence, fill_index, "
            f"{kept}) SELECT trade_id, NULL, 'FILL', NULL, 0, {kept} FROM ledger_fills_0001 "
            f"ORDER BY time, trade_id"
        )
        op.drop_table("ledger_fills_0001")
    elif bind.dialect.name == "postgresql":
        for name in MONEY:  # a database made by create_all with the capped type
            op.alter_column("ledger_fills", name, type_=sa.Numeric())
    if not inspector.has_table("ledger_orders"):
        op.create_table(
            "ledger_orders",
            sa.Column("client_order_id", sa.String(128), primary_key=True),
            sa.Column("bot_id", sa.String(64), nullable=False, index=True),
            sa.Column("mode", sa.String(16), nullable=False),
            sa.Column("side", sa.String(4), nullable=False),
            sa.Column("status", sa.String(24), nullable=False),
            sa.Column("final", sa.Boolean(), nullable=False),
        )


def downgrade() -> None:
    op.drop_table("ledger_orders")
