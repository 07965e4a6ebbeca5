"""The ledger's handling of one order event (``book_order_event``) on SQLite and PostgreSQL,
without NATS: what a redelivery, a late earlier event, a status after the final one and two
instances booking one bot at once leave in the books and the outbox."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from services.ledger.handling import book_order_event
from services.ledger.schema import migrate
from services.ledger.store import LedgerOrderRow, fills_of, position_of
from shared.catalog import load_catalog
from shared.contracts import Fill, OrderEvent, PositionUpdate
from shared.db import make_engine
from shared.outbox import OutboxMessage

T0 = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)
PRODUCTS = load_catalog(None).products
PRODUCT = PRODUCTS["ETH-BTC"]
D = Decimal


def order_event(
    sequence: int, order: str, side: str, status: str, fills: list[Fill], bot: str = "h-1"
) -> OrderEvent:
    return OrderEvent(
        message_id=f"{order}-{status}-{sequence}", correlation_id=f"intent-{order}", time=T0,
        bot_id=bot, product_id="ETH-BTC", mode="mock", intent_id=f"intent-{order}",
        client_order_id=order, action="exit" if side == "sell" else "entry",
        side=side, status=status, fills=fills, sequence=sequence,  # type: ignore[arg-type]
    )  # fmt: skip


def fill(trade_id: str, size: str, price: str) -> Fill:
    return Fill(trade_id=trade_id, price=D(price), size=D(size), fee=D(0), time=T0)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


def book(engine: Engine, event: OrderEvent):
    """As the service books it: the event's product, and the catalog's for every fill."""
    with Session(engine, expire_on_commit=False) as session:
        product = PRODUCTS[event.product_id]
        outcome = book_order_event(session, event, product, "pro_rata", PRODUCTS)
        session.commit()
        return outcome


def staged(engine: Engine) -> list[str]:
    with Session(engine) as session:
        query = select(OutboxMessage.message_id).order_by(col(OutboxMessage.id))
        return list(session.exec(query))


def published(engine: Engine, message_id: str) -> PositionUpdate:
    with Session(engine) as session:
        query = select(OutboxMessage.payload).where(OutboxMessage.message_id == message_id)
        return PositionUpdate.model_validate_json(session.exec(query).one())


def test_a_redelivered_event_books_nothing_and_stages_nothing(engine: Engine) -> None:
    buy = order_event(1, "o-1", "buy", "filled", [fill("b1", "1", "10")])
    assert book(engine, buy) is not None
    before = staged(engine)
    assert before == ["position-mock-h-1-1", "kv-position-mock-h-1-1"]
    assert book(engine, buy) is None
    assert staged(engine) == before
    with Session(engine) as session:
        assert [row.trade_id for row in fills_of(session, "h-1", "mock")] == ["b1"]


def test_a_late_earlier_event_moves_its_fill_to_the_place_it_happened(engine: Engine) -> None:
    book(engine, order_event(1, "o-1", "buy", "filled", [fill("b1", "1", "10")]))
    book(engine, order_event(5, "o-2", "sell", "filled", [fill("s1", "1", "12")]))
    book(engine, order_event(3, "o-3", "buy", "filled", [fill("b2", "1", "20")]))
    # Booked as b1, b2, s1: the sell took half of each tranche, the position is still open.
    with Session(engine) as session:
        held = position_of(session, "h-1", "mock")
    assert held is not None and held.status == "open" and held.realized_pnl_total == D(-3)
    # The sell's fill came first in an earlier event (sequence 2) that arrives only now.
    late = order_event(2, "o-2", "sell", "partially_filled", [fill("s1", "1", "12")])
    outcome = book(engine, late)
    assert outcome is not None
    position, breach, booked_now = outcome
    assert booked_now == 0 and breach is None
    # b1, s1, b2: the sell closed the first position (+2), b2 opened the second.
    assert position.status == "open" and position.quantity == 1
    assert position.average_entry_price == 20 and position.realized_pnl_total == 2
    with Session(engine) as session:
        assert position_of(session, "h-1", "mock") == position
        places = {row.trade_id: row.sequence for row in fills_of(session, "h-1", "mock")}
    assert places == {"b1": 1, "s1": 2, "b2": 3}
    # The corrected books are told, under an id of their own (at the same fill count, the id
    # the first books went out with would be dropped as a duplicate, and every reader would
    # keep the realized loss of 3 that never happened), and the bucket gets them too.
    assert staged(engine)[-2:] == ["position-mock-h-1-3-x1-r1", "kv-position-mock-h-1-3-x1-r1"]
    assert published(engine, "position-mock-h-1-3-x1-r1") == position
    assert published(engine, "kv-position-mock-h-1-3-x1-r1") == position
    # The same late event again changes nothing and tells nothing.
    assert book(engine, late) is None
    assert staged(engine)[-1] == "kv-position-mock-h-1-3-x1-r1"


def test_a_late_event_that_changes_no_books_tells_nothing_new(engine: Engine) -> None:
    book(engine, order_event(3, "o-1", "buy", "filled", [fill("b1", "1", "10")]))
    before = staged(engine)
    # An earlier event of the same order with the same fill: its place moves, the books don't.
    earlier = order_event(2, "o-1", "buy", "partially_filled", [fill("b1", "1", "10")])
    outcome = book(engine, earlier)
    assert outcome is not None and outcome[0].message_id == "position-mock-h-1-1"
    assert staged(engine) == before


def test_a_status_after_the_final_one_changes_nothing(engine: Engine) -> None:
    book(engine, order_event(1, "o-1", "buy", "filled", [fill("b1", "1", "10")]))
    assert book(engine, order_event(2, "o-1", "buy", "cancelled", [])) is None
    with Session(engine) as session:
        order = session.get(LedgerOrderRow, "o-1")
    assert order is not None and (order.status, order.final) == ("filled", True)


@pytest.fixture
def postgres_engine(engine: Engine) -> Engine:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: no two bookings overlap")
    return engine


def book_beside(
    engine: Engine, first: OrderEvent, second: OrderEvent, *, waits: bool | None = None
):
    """Book ``first`` and, while its transaction is open, ``second`` in another; commit the
    first once the second had time to reach the database (and, if it ``waits``, to be held
    there). Returns what each transaction ended with: its outcome or its error."""
    with ThreadPoolExecutor(1) as pool, Session(engine, expire_on_commit=False) as session:
        assert book_order_event(session, first, PRODUCT, "pro_rata", PRODUCTS) is not None
        started = threading.Event()

        def other():
            started.set()
            return book(engine, second)

        later = pool.submit(other)
        started.wait()
        time.sleep(0.5)
        if waits is not None:
            assert later.done() is not waits
        ended: list[object] = []
        try:
            session.commit()
            ended.append("committed")
        except IntegrityError as error:
            ended.append(error)
        ended.append(later.exception(timeout=10) or later.result())
        return ended


def test_a_second_booking_of_a_bot_waits_and_counts_the_first_fill(postgres_engine) -> None:
    book(postgres_engine, order_event(1, "o-1", "buy", "filled", [fill("b1", "1", "10")]))
    first, second = book_beside(
        postgres_engine,
        order_event(2, "o-2", "buy", "filled", [fill("b2", "1", "20")]),
        order_event(3, "o-3", "buy", "filled", [fill("b3", "1", "30")]),
        waits=True,
    )
    assert first == "committed"
    position = second[0]  # type: ignore[index]
    assert position.sequence == 3 and position.quantity == 3 and len(position.tranches) == 3


def test_two_first_bookings_of_a_bot_at_once_collide_and_one_is_retried(postgres_engine) -> None:
    """A bot's first fill has no position row to lock: the two bookings collide on its key."""
    events = [
        order_event(1, "o-1", "buy", "filled", [fill("b1", "1", "10")]),
        order_event(2, "o-2", "buy", "filled", [fill("b2", "1", "20")]),
    ]
    ended = book_beside(postgres_engine, *events)
    (failed,) = [n for n, end in enumerate(ended) if isinstance(end, IntegrityError)]
    with Session(postgres_engine) as session:  # nothing of the failed one is booked
        booked = [row.trade_id for row in fills_of(session, "h-1", "mock")]
    assert booked == [f"b{2 - failed}"]
    outcome = book(postgres_engine, events[failed])  # its redelivery books it beside the other
    assert outcome is not None and outcome[0].quantity == 2
