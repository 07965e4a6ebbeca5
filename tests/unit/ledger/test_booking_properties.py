"""Issue 16's properties of the books (hypothesis), in the executor's sequence:

* a round trip at one price with no fee realizes exactly 0, however either order is split;
* the tranches' realized P&L always sums to the position's (adjustments included);
* the average entry changes only on entries (pro rata);
* the same facts delivered in any order and any split into events give the same books.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from services.ledger.accounting import LedgerFill, book_fills

T0 = datetime(2024, 1, 1, tzinfo=UTC)
INCREMENT = Decimal("0.00000001")
MIN_SIZE = Decimal("0.001")

prices = st.decimals(min_value="0.00001", max_value="100000", places=8)
sizes = st.decimals(min_value="0.001", max_value="1000", places=8)


@st.composite
def splits(draw: st.DrawFn, total: Decimal) -> list[Decimal]:
    """``total`` cut into 1-6 positive parts on the size increment, in any proportions."""
    units = int(total / INCREMENT)
    cuts = sorted(set(draw(st.lists(st.integers(1, units - 1), max_size=5)))) if units > 1 else []
    bounds = [0, *cuts, units]
    return [Decimal(b - a) * INCREMENT for a, b in itertools.pairwise(bounds)]


def order_fills(order: str, side: str, parts: list[Decimal], price: Decimal, first_seq: int,
                events: list[int]) -> list[LedgerFill]:  # fmt: skip
    """The order's fills, spread over events (``events[k]`` = how many fills the k-th carries)."""
    fills, k, seq = [], 0, first_seq
    for count in events:
        for index in range(count):
            if k == len(parts):
                break
            fills.append(
                LedgerFill(
                    f"{order}-{k}",
                    order,
                    side,
                    price,
                    parts[k],
                    Decimal(0),  # type: ignore[arg-type]
                    T0,
                    sequence=seq,
                    index=index,
                )
            )
            k += 1
        seq += 1
    while k < len(parts):  # whatever the event split left
        fills.append(LedgerFill(f"{order}-{k}", order, side, price, parts[k], Decimal(0),  # type: ignore[arg-type]
                                T0, sequence=seq, index=k))  # fmt: skip
        k += 1
    return fills


@settings(max_examples=300, deadline=None)
@given(
    st.data(), sizes, prices, st.sampled_from(["pro_rata", "fifo"]),
    st.lists(st.integers(1, 3), min_size=1, max_size=4),
)  # fmt: skip
def test_a_round_trip_at_one_price_without_fees_realizes_exactly_zero(
    data: st.DataObject, size: Decimal, price: Decimal, allocation: str, events: list[int]
) -> None:
    buys = data.draw(splits(size))
    sells = data.draw(splits(size))
    fills = order_fills("buy", "buy", buys, price, 1, events)
    fills += order_fills("sell", "sell", sells, price, 100, events)
    random.Random(len(fills)).shuffle(fills)  # arrival order is anything
    book = book_fills(fills, min_size=MIN_SIZE, size_increment=INCREMENT, allocation=allocation)  # type: ignore[arg-type]
    (position,) = book.positions
    assert position.status == "closed"
    assert position.realized_pnl == 0
    assert position.dust == 0 and book.unmatched_exit_size == 0
    assert sum(e.size for e in position.exits) == size


@st.composite
def sequenced_histories(draw: st.DrawFn) -> list[LedgerFill]:
    """Entries and exits (at most what is held) of one bot, several fills per order, stamped
    with the executor's sequence, with the odd reversal or correction of an entry fill."""
    fills: list[LedgerFill] = []
    held = Decimal(0)
    seq = 0
    for n in range(draw(st.integers(1, 10))):
        price = draw(prices)
        rate = draw(st.sampled_from([Decimal(0), Decimal("0.0025")]))
        if held > MIN_SIZE and draw(st.booleans()):
            side, total = "sell", min(held, draw(sizes)).quantize(INCREMENT)
            held -= total
        else:
            side, total = "buy", draw(sizes)
            held += total
        parts = draw(splits(total))
        seq += 1  # every event has its own number; an order's fills share one or several
        for k, part in enumerate(parts):
            seq += draw(st.integers(0, 1))
            fee = (part * price * rate).quantize(Decimal("1E-12"))
            fills.append(LedgerFill(f"t{n}-{k}", f"o{n}", side, price, part, fee,  # type: ignore[arg-type]
                                    T0 + timedelta(seconds=n), sequence=seq, index=k))  # fmt: skip
        if held < MIN_SIZE:
            held = Decimal(0)
    entries = [f for f in fills if f.side == "buy"]
    for n in range(draw(st.integers(0, 2))):  # the exchange adjusts an entry fill now and then
        target = draw(st.sampled_from(entries))
        kind = draw(st.sampled_from(["REVERSAL", "CORRECTION"]))
        size = target.size if kind == "REVERSAL" else draw(sizes)
        seq += 1
        fills.append(replace(target, entry_id=f"adj-{n}", trade_type=kind, size=size,
                             sequence=seq, index=0))  # fmt: skip
    return fills


@settings(max_examples=200, deadline=None)
@given(sequenced_histories(), st.sampled_from(["pro_rata", "fifo"]))
def test_tranches_realized_pnl_sums_to_the_positions(
    fills: list[LedgerFill], allocation: str
) -> None:
    book = book_fills(fills, min_size=MIN_SIZE, size_increment=INCREMENT, allocation=allocation)  # type: ignore[arg-type]
    for position in book.positions:
        assert sum(t.realized_pnl for t in position.tranches) == position.realized_pnl
        assert position.realized_pnl == sum(e.realized_pnl for e in position.exits) - (
            position.dust_cost
        )


@settings(max_examples=100, deadline=None)
@given(sequenced_histories())
def test_average_entry_changes_only_on_entries(fills: list[LedgerFill]) -> None:
    """Pro rata, an exit takes from every tranche in proportion, so the average entry stays;
    but each take is rounded to the size increment, which may shift the weights by one
    increment per tranche. The bound says exactly that much and no more."""
    ordered = sorted(fills, key=lambda f: f.place)
    before = None
    for n, fill in enumerate(ordered, start=1):
        book = book_fills(ordered[:n], min_size=MIN_SIZE, size_increment=INCREMENT)
        current = book.current
        now = current.average_entry_price if current else None
        if fill.side == "sell" and current is not None and before is not None and now:
            entry_prices = [t.entry_price for t in current.tranches]
            spread = max(entry_prices) - min(entry_prices)
            slack = spread * len(entry_prices) * INCREMENT / current.quantity
            assert abs(now - before) <= slack + Decimal("1E-20") * now, fill.trade_id
            if spread == 0:
                assert now == before
        before = now


@settings(max_examples=200, deadline=None)
@given(
    sequenced_histories(), st.randoms(use_true_random=False), st.sampled_from(["pro_rata", "fifo"])
)
def test_any_arrival_order_and_redelivery_gives_the_same_books(
    fills: list[LedgerFill], shuffler: random.Random, allocation: str
) -> None:
    expected = book_fills(fills, min_size=MIN_SIZE, size_increment=INCREMENT, allocation=allocation)  # type: ignore[arg-type]
    # Redelivered in a later event (a higher sequence): still booked at its first place.
    again = [
        replace(f, sequence=(f.sequence or 0) + 1000)
        for f in shuffler.sample(fills, k=min(len(fills), 3))
    ]
    mixed = fills + again
    shuffler.shuffle(mixed)
    assert (
        book_fills(mixed, min_size=MIN_SIZE, size_increment=INCREMENT, allocation=allocation)
        == expected
    )  # type: ignore[arg-type]
