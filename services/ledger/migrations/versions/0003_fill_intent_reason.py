"""Each fill keeps why its order was asked: the intent's reason code the executor puts on every
order event (``SIGNAL``, ``STOP_ON_EXCHANGE``, ``FLATTEN``...), so the history shows each exit as
the exit it is. Fills booked before have none (``NULL``).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("ledger_fills")}
    if "intent_reason" not in columns:  # a database made by create_all has it already
        op.add_column("ledger_fills", sa.Column("intent_reason", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger_fills") as batch:
        batch.drop_column("intent_reason")
