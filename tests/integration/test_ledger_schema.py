"""The ledger's migrations build exactly the tables its models describe, on both databases."""

from __future__ import annotations

import sqlalchemy as sa

from services.ledger.schema import VERSION_TABLE, migrate
from services.ledger.store import FillRow, PositionRow
from shared.db import create_tables, make_engine
from shared.outbox import OutboxMessage

MODELS = (FillRow, PositionRow, OutboxMessage)


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
    assert version == "0001"
    engine.dispose()


def test_a_database_made_by_the_walking_skeleton_is_adopted(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine, list(MODELS))  # the skeleton's create_all, no version table
    migrate(engine)
    assert VERSION_TABLE in sa.inspect(engine).get_table_names()
    engine.dispose()
