"""Storage on SQLite and PostgreSQL: exact decimals, aware UTC times, idempotent mock orders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlmodel import Field, Session, SQLModel

from services.executor.exchanges.mock import MockExchange, MockOrderRow, Quote
from shared.catalog import load_catalog
from shared.db import ExactDecimal, UtcDateTime, create_tables, make_engine


class Sample(SQLModel, table=True):
    __tablename__ = "test_samples"

    id: int = Field(primary_key=True)
    amount: Decimal = Field(sa_type=ExactDecimal)
    at: datetime = Field(sa_type=UtcDateTime)


def stored_amount(database_url: str, amount: Decimal) -> Decimal:
    """``amount`` written to a fresh sample row and read back in another session."""
    engine = make_engine(database_url)
    create_tables(engine, [Sample])
    with Session(engine) as session:
        session.add(Sample(id=1, amount=amount, at=datetime.now(UTC)))
        session.commit()
    with Session(engine) as session:
        stored = session.get(Sample, 1)
    engine.dispose()
    assert stored is not None
    return stored.amount


@pytest.mark.parametrize(
    "amount", ["0.00000001", "123456789012345678.123456789012345678", "-28.0625", "100", "0"]
)
def test_money_round_trips_exactly(database_url: str, amount: str) -> None:
    assert stored_amount(database_url, Decimal(amount)) == Decimal(amount)


@pytest.mark.parametrize(
    ("amount", "read"),
    [("0.0100", "0.01"), ("1E+2", "100"), ("100.00", "100"), ("-0.50", "-0.5"), ("0E-8", "0"),
     ("12345678901234567890123456789012345678.50", "12345678901234567890123456789012345678.5")],
)  # fmt: skip
def test_money_reads_back_in_its_shortest_plain_form(
    database_url: str, amount: str, read: str
) -> None:
    """Both databases give the same digits back, whatever trailing zeros or exponent went in."""
    assert str(stored_amount(database_url, Decimal(amount))) == read


def test_times_come_back_aware_utc(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine, [Sample])
    at = datetime(2018, 1, 20, 5, 54, tzinfo=timezone(timedelta(hours=1)))
    with Session(engine) as session:
        session.add(Sample(id=1, amount=Decimal(1), at=at))
        session.commit()
    with Session(engine) as session:
        stored = session.get(Sample, 1)
        assert stored is not None and stored.at == at and stored.at.tzinfo is not None
        assert stored.at.utcoffset() == timedelta(0)
    engine.dispose()


def test_a_naive_time_is_refused(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine, [Sample])
    with Session(engine) as session, pytest.raises(Exception, match="naive"):
        session.add(Sample(id=1, amount=Decimal(1), at=datetime(2018, 1, 1)))
        session.commit()
    engine.dispose()


def test_the_mock_exchange_answers_a_repeated_client_order_id_with_the_same_order(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    create_tables(engine, [MockOrderRow])
    quotes = {"ETH-BTC": Quote(Decimal("0.09"), datetime(2018, 1, 20, tzinfo=UTC))}
    catalog = load_catalog()
    exchange = MockExchange(engine, catalog.products, Decimal("0.006"), quotes.get)
    order = dict(  # noqa: C408 - keyword arguments, reused twice
        client_order_id="c-1",
        product_id="ETH-BTC",
        side="buy",
        quote_size=Decimal("0.01"),
        base_size=None,
    )
    first = exchange.place_market_order(**order)
    quotes["ETH-BTC"] = Quote(Decimal("0.5"), datetime(2018, 1, 21, tzinfo=UTC))
    # A new exchange object over the same book stands for a restarted executor.
    again = MockExchange(engine, catalog.products, Decimal("0.006"), quotes.get).place_market_order(
        **order
    )
    assert first == again
    assert first.status == "FILLED" and first.fills[0].price == Decimal("0.09")
    with Session(engine) as session:
        assert len(session.exec(MockOrderRow.__table__.select()).all()) == 1  # type: ignore[attr-defined]
    engine.dispose()


def test_no_price_fails_the_order_instead_of_inventing_one(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine, [MockOrderRow])
    exchange = MockExchange(engine, load_catalog().products, Decimal("0.006"), {}.get)
    answer = exchange.place_market_order(
        client_order_id="c-2",
        product_id="ETH-BTC",
        side="buy",
        quote_size=Decimal("0.01"),
        base_size=None,
    )
    assert answer.status == "FAILED" and answer.reason is not None
    assert answer.reason.code == "NO_MARKET_PRICE" and answer.fills == ()
    engine.dispose()
