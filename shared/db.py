"""Storage engines: SQLite (WAL) for the embedded stack, PostgreSQL for deployments."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Context, Decimal
from functools import cache
from pathlib import Path
from typing import TypeVar

from sqlalchemy import DateTime, Engine, Insert, Numeric, String, Table, event, insert, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, SQLModel, create_engine

READ_ONLY = "tranche_read_only"
"""Execution option of an engine (``Service.read_engine``) whose transactions only read."""


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file's folder is created and the file put in WAL mode."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


# Any fixed number: instances of a service starting together take turns creating tables.
_CREATE_TABLES_LOCK = 0x7472616E636865  # "tranche"


def create_tables(engine: Engine, models: list[type[SQLModel]]) -> None:
    """Create the given tables only: every service keeps its own tables in its own database.

    Two instances starting at once would both see a table missing and one CREATE would fail; on
    PostgreSQL they take an advisory lock for it (SQLite serializes writers by itself)."""
    tables: list[Table] = [model.__table__ for model in models]  # type: ignore[attr-defined]  # SQLModel sets __table__ at class creation, untyped
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATE_TABLES_LOCK}
            )
        SQLModel.metadata.create_all(connection, tables=tables)


S = TypeVar("S")

DIALECT_INSERTS: dict[str, Callable[[Table], Insert]] = {
    "postgresql": postgresql_insert,
    "sqlite": sqlite_insert,
}
"""Each dialect's INSERT, the one that knows ``ON CONFLICT`` (SQLite and PostgreSQL both do)."""


def by_dialect(build: Callable[[Callable[[Table], Insert]], S]) -> dict[str, S]:
    """A statement per dialect, built once (SQLAlchemy then compiles each once and caches it)
    from that dialect's INSERT; run the session's with :func:`for_session`."""
    return {name: build(make) for name, make in DIALECT_INSERTS.items()}


def for_session(statements: dict[str, S], session: Session) -> S:
    """Of statements built by :func:`by_dialect`, the one for the session's database."""
    return statements[session.get_bind().dialect.name]


class InsertUnlessThere:
    """An ``INSERT ... ON CONFLICT (key) DO NOTHING`` into ``table``, built once per dialect:
    one round trip both asks whether the row is there and stores it if not, where a query
    then an insert cost two (and a race between them a failed insert on PostgreSQL)."""

    def __init__(self, table: Table, key: list[str]):
        # psycopg's row count of an INSERT is not kept unless asked for (it reads -1).
        self._by_dialect = by_dialect(
            lambda insert: (
                insert(table)  # type: ignore[attr-defined]  # both dialects' Insert have it
                .on_conflict_do_nothing(index_elements=key)
                .execution_options(preserve_rowcount=True)
            )
        )

    def __call__(
        self, session: Session, values: dict[str, object] | list[dict[str, object]]
    ) -> bool:
        """Insert ``values`` (a row, or rows) in the session's transaction; False when the key
        was there (of every row)."""
        connection = session.connection()
        return bool(connection.execute(for_session(self._by_dialect, session), values).rowcount)


@cache
def insert_of(table: Table) -> Insert:
    """The table's plain INSERT, built once (SQLAlchemy compiles it once and caches it)."""
    return insert(table)


def insert_row(session: Session, model: type[SQLModel], **values: object) -> None:
    """Insert one row at once, in the caller's transaction, with a statement compiled once: no
    ORM object to build and flush. The columns ``values`` leave out take the model's defaults
    (SQLModel's defaults are the model's, not the table's), as building the object would."""
    missing = model.model_fields.keys() - values.keys()
    for name in missing:
        values[name] = model.model_fields[name].get_default(call_default_factory=True)
    table: Table = model.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
    session.connection().execute(insert_of(table), values)


def ping(engine: Engine) -> None:
    """Raise if the database does not answer."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC in, aware UTC out, on every database (SQLite would hand back naive times)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: Tranche stores aware UTC times only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_WIDE = Context(prec=80)
_ONE = Decimal(1)


class ExactDecimal(TypeDecorator[Decimal]):
    """Money and quantities, exact on every database: NUMERIC without precision or scale on
    PostgreSQL (any digits a decimal string carries, never rounded to a fixed scale), text on
    SQLite (whose NUMERIC would store a float). Read back normalised, so ``0.0100`` stored on
    PostgreSQL reads as ``0.01`` exactly as SQLite gives it."""

    impl = String(64)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(64))
        return dialect.type_descriptor(Numeric(asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect) -> object:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"expected Decimal, got {type(value).__name__}")
        return format(value, "f") if dialect.name == "sqlite" else value

    def process_result_value(self, value: object, dialect) -> Decimal | None:
        if value is None:
            return None
        # normalize() and quantize() round to the context's precision: 28 digits by default,
        # fewer than a stored decimal may carry, so give them room (a context's own methods:
        # entering a local context for each value read cost more than reading it).
        number = _WIDE.normalize(Decimal(value if isinstance(value, str) else str(value)))
        # normalize() writes 100 as 1E+2; back to an integer exponent for plain output.
        return _WIDE.quantize(number, _ONE) if number == number.to_integral_value() else number
