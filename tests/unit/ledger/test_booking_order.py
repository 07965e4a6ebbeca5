"""Issue 16 in the pure core: fills are booked in the executor's sequence, an exit closes only
when its order is final, and Coinbase's adjusted fills (reversal, correction) are booked as
adjustments of the fill they name."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.ledger.accounting import LedgerFill, book_fills

D = Decimal
T0 = datetime(2024, 1, 1, tzinfo=UTC)
INCREMENT = D("0.00000001")


def fill(
    trade_id: str, order: str, side: str, size: str, price: str, *, sequence: int | None,
    index: int = 0, fee: str = "0", entry_id: str | None = None, trade_type: str = "FILL",
) -> LedgerFill:  # fmt: skip
    return LedgerFill(
        trade_id=trade_id,
        client_order_id=order,
        side=side,  # type: ignore[arg-type]
        price=D(price),
        size=D(size),
        fee=D(fee),
        time=T0,  # every fill at the same instant: only the sequence can order them
        sequence=sequence,
        index=index,
        entry_id=entry_id,
        trade_type=trade_type,  # type: ignore[arg-type]
    )


def test_fills_at_one_instant_are_booked_in_the_executors_sequence_not_by_trade_id():
    buy = fill("zz-buy", "o-buy", "buy", "0.2", "100", sequence=3, fee="0.00018")
    sell = fill("aa-sell", "o-sell", "sell", "0.2", "100.3", sequence=7, fee="0.00018012")
    book = book_fills([sell, buy], min_size=D("0.001"), size_increment=INCREMENT)
    assert book.current is None
    assert book.unmatched_exit_size == 0
    (position,) = book.positions
    assert position.fees_paid == D("0.00036012")
    assert position.realized_pnl == D("0.2") * D("0.3") - D("0.00036012")


def test_an_exit_whose_last_fills_are_below_min_size_books_every_fill():
    fills = [fill("b1", "o-buy", "buy", "0.02", "30", sequence=1)]
    fills += [
        fill(f"s{k}", "o-sell", "sell", part, "30", sequence=2, index=k)
        for k, part in enumerate(["0.0195", "0.0004", "0.0001"])
    ]
    book = book_fills(fills, min_size=D("0.001"), size_increment=INCREMENT)
    (position,) = book.positions
    assert position.status == "closed"
    assert position.realized_pnl == 0
    assert position.dust == 0
    assert book.unmatched_exit_size == 0
    assert len(position.exits) == 3


def test_an_exit_order_not_yet_final_keeps_a_small_remainder_open():
    fills = [
        fill("b1", "o-buy", "buy", "0.02", "30", sequence=1),
        fill("s1", "o-sell", "sell", "0.0195", "30", sequence=2),
    ]
    open_ = book_fills(fills, min_size=D("0.001"), size_increment=INCREMENT, final_orders={"o-buy"})
    assert open_.current is not None and open_.current.quantity == D("0.0005")
    closed = book_fills(
        fills, min_size=D("0.001"), size_increment=INCREMENT, final_orders={"o-buy", "o-sell"}
    )
    assert closed.current is None
    assert closed.positions[0].dust == D("0.0005")
    assert closed.positions[0].dust_cost == D("0.015")


def test_a_fill_redelivered_in_a_later_event_keeps_its_first_place():
    buy = fill("b1", "o-buy", "buy", "1", "10", sequence=1)
    sell = fill("s1", "o-sell", "sell", "1", "11", sequence=2)
    again = fill("b1", "o-buy", "buy", "1", "10", sequence=9)
    book = book_fills([sell, again, buy], min_size=D("0.001"), size_increment=INCREMENT)
    assert book.positions[0].realized_pnl == 1 and book.current is None


def test_a_reversal_takes_back_the_fill_it_names_and_shows_its_effect():
    fills = [
        fill("t1", "o1", "buy", "2", "10", sequence=1, entry_id="e1"),
        fill("t2", "o1", "buy", "1", "13", sequence=1, index=1, entry_id="e2"),
        fill("t2", "o1", "buy", "1", "13", sequence=4, entry_id="e3", trade_type="REVERSAL"),
    ]
    book = book_fills(fills, min_size=D("0.001"), size_increment=INCREMENT)
    assert book.current is not None
    assert book.current.quantity == 2 and book.current.cost_basis == 20
    (adjustment,) = book.adjustments
    assert (adjustment.entry_id, adjustment.trade_id) == ("e3", "t2")
    assert adjustment.trade_type == "REVERSAL"
    assert adjustment.quantity_change == -1
    assert adjustment.cost_basis_change == -13


def test_a_correction_replaces_the_fill_it_names_in_its_place():
    fills = [
        fill("t1", "o1", "buy", "30", "10", sequence=1, entry_id="e1"),
        fill("t2", "o2", "sell", "10", "12", sequence=2, entry_id="e2"),
        fill("t1", "o1", "buy", "31", "10", sequence=3, entry_id="e3", trade_type="CORRECTION"),
    ]
    book = book_fills(fills, min_size=D("0.001"), size_increment=INCREMENT)
    assert book.current is not None and book.current.quantity == 21
    assert book.current.realized_pnl == 20
    (adjustment,) = book.adjustments
    assert adjustment.quantity_change == 1 and adjustment.realized_pnl_change == 0


def test_one_entry_id_with_two_contents_is_refused():
    a = fill("t1", "o1", "buy", "30", "10", sequence=1, entry_id="e1")
    b = fill("t1", "o1", "buy", "31", "10", sequence=2, entry_id="e1")
    with pytest.raises(ValueError, match="e1"):
        book_fills([a, b], min_size=D("0.001"), size_increment=INCREMENT)


def test_distinct_entry_ids_sharing_a_trade_id_are_both_fills():
    a = fill("t1", "o1", "buy", "1", "10", sequence=1, entry_id="e1")
    b = fill("t1", "o1", "buy", "2", "10", sequence=1, index=1, entry_id="e2")
    book = book_fills([a, b], min_size=D("0.001"), size_increment=INCREMENT)
    assert book.current is not None and book.current.quantity == 3
