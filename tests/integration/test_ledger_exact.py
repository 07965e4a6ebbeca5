"""The same fills give byte-identical books on SQLite and PostgreSQL (hypothesis): prices and
fees of up to 28 significant digits, stored and read back through the ledger's store, booked,
and written as the position message, the history and its CSV."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlmodel import Session

from services.ledger.booking import recompute
from services.ledger.history import to_csv
from services.ledger.schema import migrate
from services.ledger.store import add_fills, note_order, sort_fills
from shared.catalog import Product
from shared.contracts import Fill, OrderEvent
from shared.db import make_engine
from tests.support.postgres import fresh_database

T0 = datetime(2024, 1, 1, tzinfo=UTC)
PRODUCT = Product(
    base_min_size=Decimal("0.00000001"), base_increment=Decimal("0.00000001"),
    quote_increment=Decimal("0.00000001"), quote_min_size=Decimal("0.00000001"),
)  # fmt: skip
BOTS = itertools.count()

# Up to 28 significant digits, 20 decimals (price < 1e8); sizes on the base increment (< 10);
# fees up to 28 digits, all decimals. Every product and sum stays within the wire's 38 digits.
prices = st.integers(1, 10**28 - 1).map(lambda n: Decimal(n).scaleb(-20))
sizes = st.integers(1, 10**9 - 1).map(lambda n: Decimal(n).scaleb(-8))
fees = st.integers(0, 10**28 - 1).map(lambda n: Decimal(n).scaleb(-28))


@st.composite
def orders(draw: st.DrawFn) -> list[tuple[str, list[tuple[Decimal, Decimal, Decimal]]]]:
    """Orders of a long-only bot: (side, [(price, size, fee), ...]); exits sell what is held."""
    held = Decimal(0)
    found = []
    for _ in range(draw(st.integers(1, 4))):
        if held > 0 and draw(st.booleans()):
            size = min(held, draw(sizes))
            held -= size
            found.append(("sell", [(draw(prices), size, draw(fees))]))
        else:
            fills = draw(st.lists(st.tuples(prices, sizes, fees), min_size=1, max_size=2))
            held += sum(size for _, size, _ in fills)
            found.append(("buy", fills))
    return found


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Engine]]:
    folder: Path = tmp_path_factory.mktemp("exact")
    sqlite = make_engine(f"sqlite:///{folder / 'ledger.db'}")
    with fresh_database() as url:
        postgres = make_engine(url)
        for engine in (sqlite, postgres):
            migrate(engine)
        yield sqlite, postgres
        postgres.dispose()
    sqlite.dispose()


def book_on(engine: Engine, bot: str, history) -> tuple[str, str]:
    with Session(engine) as session:
        for n, (side, fills) in enumerate(history):
            event = OrderEvent(
                message_id=f"{bot}-{n}", correlation_id=bot, time=T0, bot_id=bot,
                product_id="ETH-BTC", mode="mock", intent_id=f"{bot}-{n}",
                client_order_id=f"{bot}-{n}", action="exit" if side == "sell" else "entry",
                side=side, status="filled", sequence=n,
                fills=[
                    Fill(trade_id=f"{bot}-{n}-{k}", price=price, size=size, fee=fee,
                         time=T0 + timedelta(seconds=n))
                    for k, (price, size, fee) in enumerate(fills)
                ],
            )  # fmt: skip
            sorted_ = sort_fills(session, event)
            note_order(session, event)
            add_fills(session, event, sorted_.new)  # type: ignore[union-attr]
        session.commit()
        booked = recompute(
            session, bot_id=bot, mode="mock", product_id="ETH-BTC", product=PRODUCT,
            allocation="pro_rata", correlation_id=bot, last_order_event_id=None,
            products={"ETH-BTC": PRODUCT},
        )  # fmt: skip
        assert booked is not None
        return booked.position.model_dump_json(), to_csv(booked.book, "ETH-BTC")


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(orders())
def test_random_fills_give_byte_identical_books_on_sqlite_and_postgresql(
    engines: tuple[Engine, Engine], history
) -> None:
    bot = f"exact-{next(BOTS)}"
    sqlite, postgres = engines
    on_sqlite = book_on(sqlite, bot, history)
    on_postgres = book_on(postgres, bot, history)
    assert on_sqlite == on_postgres
