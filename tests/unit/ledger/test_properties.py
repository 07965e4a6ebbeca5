"""Properties of the books (hypothesis): they hold for any history, not only the examples.

The independent calculation is plain cash flow: what the bot paid for its buys (fees included)
and received for its sells (fees deducted), plus what it still holds at the mark, must equal
realized plus unrealized P&L, every fee counted exactly once.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from services.ledger.accounting import LedgerFill, book_fills, unrealized_pnl

T0 = datetime(2018, 1, 20, tzinfo=UTC)
MIN_SIZE = Decimal("0.001")
INCREMENT = Decimal("0.00000001")

prices = st.decimals(min_value="0.00001", max_value="100000", places=8)
sizes = st.decimals(min_value="0.001", max_value="1000", places=8)
fee_rates = st.sampled_from([Decimal(0), Decimal("0.0025"), Decimal("0.006")])


@st.composite
def histories(draw: st.DrawFn) -> list[LedgerFill]:
    """Entries of one or more fills and exits of at most what is held (long-only spot)."""
    fills: list[LedgerFill] = []
    held = Decimal(0)
    rate = draw(fee_rates)
    for n in range(draw(st.integers(1, 12))):
        at = T0 + timedelta(minutes=n)
        if held > MIN_SIZE and draw(st.booleans()):
            size = min(held, draw(sizes)).quantize(INCREMENT)
            side = "sell"
            held -= size
            parts = [size]
            if held < MIN_SIZE:
                held = Decimal(0)  # dust: it leaves the books, and nobody can sell it
        else:
            side = "buy"
            parts = draw(st.lists(sizes, min_size=1, max_size=3))
            held += sum(parts)
        price = draw(prices)
        for k, part in enumerate(parts):
            fee = (part * price * rate).quantize(Decimal("1E-12"))
            fills.append(
                LedgerFill(
                    f"t{n}-{k}",
                    f"order-{n}",
                    side,
                    price,
                    part,
                    fee,
                    at,  # type: ignore[arg-type]
                    sequence=n,
                    index=k,
                )
            )
    return fills


def cash_flow(fills: list[LedgerFill]) -> Decimal:
    flow = Decimal(0)
    for fill in fills:
        value = fill.size * fill.price
        flow += value - fill.fee if fill.side == "sell" else -(value + fill.fee)
    return flow


@settings(max_examples=300, deadline=None)
@given(histories(), prices, st.sampled_from(["pro_rata", "fifo"]))
def test_realized_plus_unrealized_equals_cash_flow_plus_holdings_at_the_mark(
    fills: list[LedgerFill], mark: Decimal, allocation: str
) -> None:
    book = book_fills(fills, min_size=MIN_SIZE, size_increment=INCREMENT, allocation=allocation)  # type: ignore[arg-type]
    realized = sum((p.realized_pnl for p in book.positions), Decimal(0))
    current = book.current
    held = current.quantity if current else Decimal(0)
    unrealized = unrealized_pnl(current, mark) if current else Decimal(0)
    # Dust left the books (its cost was realized as a loss): its purchase is in the cash flow,
    # and it is valued at nothing, because it cannot be sold.
    assert realized + unrealized == cash_flow(fills) + held * mark
    assert book.unmatched_exit_size == 0


@settings(max_examples=300, deadline=None)
@given(histories(), st.sampled_from(["pro_rata", "fifo"]))
def test_tranches_add_up_to_their_position(fills: list[LedgerFill], allocation: str) -> None:
    book = book_fills(fills, min_size=MIN_SIZE, size_increment=INCREMENT, allocation=allocation)  # type: ignore[arg-type]
    for position in book.positions:
        assert sum(t.realized_pnl for t in position.tranches) == position.realized_pnl
        assert sum(t.remaining_size for t in position.tranches) == position.quantity
        assert sum(t.remaining_cost for t in position.tranches) == position.cost_basis
        for exit_ in position.exits:
            assert sum(part[2] for part in exit_.per_tranche) == exit_.realized_pnl


@settings(max_examples=200, deadline=None)
@given(histories(), st.randoms(use_true_random=False))
def test_arrival_order_and_duplicates_change_nothing(
    fills: list[LedgerFill], shuffler: random.Random
) -> None:
    expected = book_fills(fills, min_size=MIN_SIZE, size_increment=INCREMENT)
    again = fills + shuffler.sample(fills, k=min(len(fills), 3))
    shuffler.shuffle(again)
    assert book_fills(again, min_size=MIN_SIZE, size_increment=INCREMENT) == expected
