"""The ledger's migrations build exactly the tables its models describe, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import sqlalchemy as sa
from alembic import command

from services.ledger.schema import VERSION_TABLE, alembic_config, migrate
from services.ledger.store import FillRow, LedgerOrderRow, PositionRow
from shared.db import create_tables, make_engine
from shared.outbox import OutboxMessage

MODELS = (FillRow, LedgerOrderRow, PositionRow, OutboxMessage)


def columns(engine: sa.Engine, table: str) -> dict[str, bool]:
    return {c["name"]: c["nullable"] for c in sa.inspect(engine).get_columns(table)}


def test_migrations_match_the_models_and_run_twice(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    migrate(engine)  # on every start: the second run finds the schema current
    for model in MODELS:
        table = model.__table__  # type: ignore[attr-defined]
        expected = {column.name: column.nullable for column in table.columns}
        assert columns(engine, table.name) == expected, table.name
    with engine.connect() as connection:
        (version,) = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).one()
    assert version == "0003"
    engine.dispose()


def test_a_database_made_by_the_walking_skeleton_is_adopted(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine, list(MODELS))  # the skeleton's create_all, no version table
    migrate(engine)
    assert VERSION_TABLE in sa.inspect(engine).get_table_names()
    engine.dispose()


@contextmanager
def at_revision(engine: sa.Engine, revision: str) -> Iterator[sa.Connection]:
    """A connection to a database migrated up to ``revision`` only (committed on exit)."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        yield connection


def test_fills_booked_under_0001_keep_their_facts_and_booking_order(database_url: str) -> None:
    engine = make_engine(database_url)
    with at_revision(engine, "0001") as connection:
        for trade_id, minute in (("b", 1), ("a", 2)):  # time first, then trade id, as 0001 did
            connection.execute(
                sa.text(
                    "INSERT INTO ledger_fills (trade_id, bot_id, mode, product_id, intent_id, "
                    "client_order_id, side, price, size, fee, liquidity, time, order_event_id) "
                    "VALUES (:t, 'l-1', 'mock', 'ETH-BTC', 'i', 'o', 'buy', '0.05', '1', '0.001', "
                    "'taker', :at, 'e')"
                ),
                {"t": trade_id, "at": f"2024-01-01 00:0{minute}:00+00:00"},
            )
    migrate(engine)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT fill_key, trade_id, trade_type, sequence, fee FROM ledger_fills ORDER BY id"
            )
        ).all()
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("b", "b", "FILL", None),
        ("a", "a", "FILL", None),
    ]
    assert {str(Decimal(str(r[4])).normalize()) for r in rows} == {"0.001"}
    engine.dispose()


def test_fills_booked_under_0002_keep_their_facts_and_have_no_reason(database_url: str) -> None:
    engine = make_engine(database_url)
    with at_revision(engine, "0002") as connection:
        connection.execute(
            sa.text(
                "INSERT INTO ledger_fills (fill_key, trade_id, trade_type, bot_id, mode, "
                "product_id, intent_id, client_order_id, side, price, size, fee, liquidity, time, "
                "order_event_id, sequence, fill_index) VALUES ('t', 't', 'FILL', 'l-1', 'mock', "
                "'ETH-BTC', 'i', 'o', 'sell', '0.05', '1', '0.001', 'taker', "
                "'2024-01-01 00:01:00+00:00', 'e', 7, 0)"
            )
        )
    migrate(engine)
    with engine.begin() as connection:
        kept = connection.execute(
            sa.text("SELECT trade_id, sequence, intent_reason FROM ledger_fills")
        ).one()
        assert tuple(kept) == ("t", 7, None)
        connection.execute(sa.text("UPDATE ledger_fills SET intent_reason = 'STOP_ON_EXCHANGE'"))
        (reason,) = connection.execute(sa.text("SELECT intent_reason FROM ledger_fills")).one()
    assert reason == "STOP_ON_EXCHANGE"
    engine.dispose()
