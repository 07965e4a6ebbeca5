"""Position accounting: fills in, positions out. Every money check is exact Decimal equality."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.ledger.accounting import (
    MAX_TRANCHES,
    Book,
    LedgerFill,
    book_fills,
    unrealized_pnl,
)

D = Decimal
T0 = datetime(2024, 1, 1, tzinfo=UTC)
INCREMENT = D("0.00000001")


def fill(n, side, size, price, fee="0", order=None, trade_id=None) -> LedgerFill:
    """The n-th fill: n seconds after T0, trade id ``t<n>``, its own order unless told."""
    return LedgerFill(
        trade_id=trade_id or f"t{n:04d}",
        client_order_id=order or f"o{n}",
        side=side,
        price=D(price),
        size=D(size),
        fee=D(fee),
        time=T0 + timedelta(seconds=n),
    )


def fills(*specs, fee_rate="0") -> list[LedgerFill]:
    """Fills from ``(side, size, price[, order])`` specs, each charged ``fee_rate`` of notional."""
    out = []
    for n, (side, size, price, *order) in enumerate(specs, start=1):
        fee = D(size) * D(price) * D(fee_rate)
        out.append(fill(n, side, size, price, fee, order[0] if order else None))
    return out


def book(fill_list, *, min_size="0.0001", allocation="pro_rata") -> Book:
    result = book_fills(
        fill_list, min_size=D(min_size), size_increment=INCREMENT, allocation=allocation
    )
    assert_consistent(result, D(min_size))
    return result


def assert_consistent(result: Book, min_size: Decimal) -> None:
    """The invariants the module docstring promises, on every book any test builds."""
    for position in result.positions:
        tranches = position.tranches
        assert position.quantity >= 0
        assert all(t.remaining_size >= 0 and t.remaining_cost >= 0 for t in tranches)
        assert sum(t.remaining_size for t in tranches) == position.quantity
        assert sum(t.remaining_cost for t in tranches) == position.cost_basis
        assert sum(t.realized_pnl for t in tranches) == position.realized_pnl
        exits = position.exits
        assert sum(e.realized_pnl for e in exits) - position.dust_cost == position.realized_pnl
        assert position.fees_paid == sum(t.entry_fees for t in tranches) + sum(e.fee for e in exits)
        for exit_ in exits:
            assert sum(q for _, q, _ in exit_.per_tranche) == exit_.size
            assert sum(pnl for _, _, pnl in exit_.per_tranche) == exit_.realized_pnl
        assert position.tranche_breach == (len(tranches) > MAX_TRANCHES)
        if position.status == "closed":
            assert position.quantity == 0
            assert position.cost_basis == 0
            assert position.dust == 0 or position.dust < min_size
            assert position.average_entry_price is None
    assert all(p.status == "closed" for p in result.positions[:-1])


WORKED = [("buy", "100", "10"), ("buy", "100", "15"), ("sell", "50", "12"), ("sell", "100", "20")]


def test_worked_example_without_fees():
    entered = book(fills(*WORKED[:2])).current
    assert entered.average_entry_price == D("12.5")
    position = book(fills(*WORKED)).current
    assert [e.realized_pnl for e in position.exits] == [D("-25"), D("750")]
    assert position.realized_pnl == D("725")
    assert position.quantity == D("50")
    assert position.average_entry_price == D("12.5")


def test_worked_example_with_quarter_percent_fees():
    position = book(fills(*WORKED, fee_rate="0.0025")).current
    first, second = position.exits
    assert first.realized_pnl == D(50) * 12 * D("0.9975") - D(50) * D("12.5") * D("1.0025")
    assert first.realized_pnl == D("-28.0625")
    # 150 left cost 2506.25 - 626.5625; 100 of them go for 2000 less a 5 fee.
    assert second.realized_pnl == D("1995") - D("1879.6875") * 100 / 150
    assert position.realized_pnl == D("713.8125")
    assert position.fees_paid == D("2.5") + D("3.75") + D("1.5") + D("5")


@pytest.mark.parametrize(
    ("specs", "fee_rate", "average", "break_even"),
    [
        ([("buy", "2", "100")], "0", "100", "100"),
        ([("buy", "2", "100")], "0.01", "100", "101"),
        ([("buy", "1", "100"), ("buy", "3", "200")], "0", "175", "175"),
        ([("buy", "1", "100"), ("buy", "3", "200")], "0.001", "175", "175.175"),
        ([("buy", "4", "10"), ("sell", "1", "50")], "0", "10", "10"),
    ],
)
def test_average_entry_excludes_fees_and_break_even_includes_them(
    specs, fee_rate, average, break_even
):
    position = book(fills(*specs, fee_rate=fee_rate)).current
    assert position.average_entry_price == D(average)
    assert position.break_even_price == D(break_even)
    assert position.cost_basis == position.quantity * D(break_even)


def test_exits_do_not_move_average_entry():
    before = book(fills(*WORKED[:2], fee_rate="0.0025")).current
    after = book(fills(*WORKED[:3], fee_rate="0.0025")).current
    assert after.average_entry_price == before.average_entry_price == D("12.5")
    assert after.break_even_price == before.break_even_price
    assert [t.remaining_size for t in after.tranches] == [D(75), D(75)]


def test_fifo_takes_the_oldest_tranche_first():
    position = book(fills(*WORKED[:2], ("sell", "120", "12")), allocation="fifo").current
    assert [t.remaining_size for t in position.tranches] == [D(0), D(80)]
    assert position.average_entry_price == D(15)
    assert position.exits[0].per_tranche == ((1, D(100), D(200)), (2, D(20), D(-60)))


def test_pro_rata_and_fifo_agree_on_totals_but_not_per_tranche():
    specs = [*WORKED, ("sell", "50", "11")]
    pro_rata = book(fills(*specs, fee_rate="0.0025")).positions[0]
    fifo = book(fills(*specs, fee_rate="0.0025"), allocation="fifo").positions[0]
    assert pro_rata.status == fifo.status == "closed"
    assert pro_rata.realized_pnl == fifo.realized_pnl
    assert pro_rata.fees_paid == fifo.fees_paid
    assert [t.realized_pnl for t in pro_rata.tranches] != [t.realized_pnl for t in fifo.tranches]
    assert pro_rata.exits[0].realized_pnl != fifo.exits[0].realized_pnl


@pytest.mark.parametrize("allocation", ["pro_rata", "fifo"])
@pytest.mark.parametrize("exit_size", ["0.00000007", "0.00000001", "0.33333334", "0.77777777"])
def test_tranche_sums_equal_position_sums_on_awkward_numbers(allocation, exit_size):
    entries = [
        fill(1, "buy", "0.33333333", "0.00141342", "0.00000000117783"),
        fill(2, "buy", "0.33333334", "0.00141343", "0.00000000117786"),
        fill(3, "buy", "0.33333333", "0.00141351", "0.00000000117792"),
    ]
    exits = [fill(4 + i, "sell", exit_size, "0.00141777", "0.0000000000013") for i in range(3)]
    result = book(entries + exits, min_size="0.00000001", allocation=allocation)
    position = result.positions[0]
    cost_in = sum(f.size * f.price + f.fee for f in entries)
    cash_out = sum(e.size * e.price - e.fee for e in position.exits)
    assert position.realized_pnl + position.dust_cost == cash_out - (cost_in - position.cost_basis)


def test_fills_of_one_order_aggregate_into_one_tranche():
    position = book(
        [
            fill(1, "buy", "1", "10", "0.01", order="A"),
            fill(2, "buy", "3", "11", "0.03", order="A"),
            fill(3, "buy", "2", "12", "0.02", order="B"),
        ]
    ).current
    first, second = position.tranches
    assert (first.index, first.client_order_id, first.size) == (1, "A", D(4))
    assert first.entry_price == D("10.75")
    assert first.entry_fees == D("0.04")
    assert first.remaining_cost == D("43.04")
    assert second.index == 2


@pytest.mark.parametrize(("orders", "breach"), [(2, False), (MAX_TRANCHES, False), (4, True)])
def test_third_tranche_is_the_last_and_a_fourth_is_booked_but_flagged(orders, breach):
    position = book(fills(*[("buy", "1", str(10 + n)) for n in range(orders)])).current
    assert len(position.tranches) == orders
    assert position.quantity == orders
    assert position.tranche_breach is breach


def test_tranche_limit_counts_over_the_life_of_a_position():
    specs = [("buy", "1", "10"), ("buy", "1", "10"), ("sell", "1.5", "11")]
    specs += [("buy", "1", "10"), ("buy", "1", "10")]
    assert book(fills(*specs)).current.tranche_breach


def test_dust_closes_the_position_and_next_entry_opens_position_two():
    specs = [("buy", "1", "10"), ("sell", "0.9995", "12"), ("buy", "2", "11")]
    result = book(fills(*specs), min_size="0.001")
    closed, reopened = result.positions
    assert closed.status == "closed"
    assert closed.closed_at == T0 + timedelta(seconds=2)
    assert (closed.quantity, closed.dust, closed.dust_cost) == (0, D("0.0005"), D("0.005"))
    # The dust cannot be sold, so its cost is realized as a loss with the closing exit.
    assert closed.realized_pnl == D("0.9995") * 12 - D("9.995") - D("0.005")
    assert result.current is reopened
    assert (reopened.number, reopened.tranches[0].index, reopened.quantity) == (2, 1, D(2))


@pytest.mark.parametrize("min_size", ["0", "0.0001"])
def test_exact_full_exit_closes_without_dust(min_size):
    result = book(fills(("buy", "1", "10"), ("sell", "1", "12")), min_size=min_size)
    assert result.current is None
    assert result.positions[0].dust == 0
    assert result.positions[0].realized_pnl == 2


def test_duplicate_trade_ids_are_booked_once():
    once = fills(*WORKED)
    assert book(once + once[1:3]) == book(once)


def test_a_trade_id_with_two_different_contents_is_refused():
    good = fill(1, "buy", "1", "10")
    with pytest.raises(ValueError, match="different contents"):
        book([good, fill(1, "buy", "2", "10")])


def test_fill_order_does_not_matter():
    ordered = fills(*WORKED, ("buy", "3", "9"), ("sell", "7", "8"), fee_rate="0.001")
    # Same timestamp: the executor's sequence orders them, so input order still cannot matter.
    ordered += [fill(90, "sell", "1", "9", trade_id="t0090b"), fill(90, "sell", "2", "9")]
    ordered = [replace(f, sequence=n) for n, f in enumerate(ordered)]
    expected = book(ordered)
    shuffler = random.Random(7)
    for _ in range(20):
        shuffled = ordered[:]
        shuffler.shuffle(shuffled)
        assert book(shuffled) == expected


def test_oversell_books_what_is_held_and_flags_the_excess():
    result = book(fills(("buy", "2", "10"), ("sell", "3", "12"), fee_rate="0.01"))
    position = result.positions[0]
    assert position.status == "closed"
    assert position.unmatched_exit_size == 1
    assert position.exits[0].size == 2
    # The whole fill fee was paid, so the booked part carries all of it.
    assert position.realized_pnl == 24 - D("0.36") - D("20.2")


def test_sell_while_flat_is_recorded_on_the_book_not_a_position():
    specs = [("sell", "1", "10"), ("buy", "1", "10"), ("sell", "1", "11"), ("sell", "2", "12")]
    result = book(fills(*specs))
    assert len(result.positions) == 1
    assert result.current is None
    assert result.unmatched_exit_size == 3
    assert [f.trade_id for f in result.unmatched_exits] == ["t0001", "t0004"]
    assert result.positions[0].unmatched_exit_size == 0


@pytest.mark.parametrize(
    ("mark", "expected"),
    [("12.5", "-6.25"), ("20", "1493.75"), ("0", "-2506.25")],
)
def test_unrealized_pnl_is_mark_value_less_cost_basis(mark, expected):
    position = book(fills(*WORKED[:2], fee_rate="0.0025")).current
    assert unrealized_pnl(position, D(mark)) == D(expected)


def test_unrealized_pnl_of_a_closed_position_is_zero():
    closed = book(fills(("buy", "1", "10"), ("sell", "1", "12"))).positions[0]
    assert unrealized_pnl(closed, D(99)) == 0


@pytest.mark.parametrize(
    ("bad", "complaint"),
    [
        (fill(1, "buy", "0", "10"), "must be > 0"),
        (fill(1, "buy", "1", "-1"), "must be > 0"),
        (fill(1, "buy", "1", "10", "-0.1"), "fee >= 0"),
        (fill(1, "hold", "1", "10"), "unknown side"),
        (LedgerFill("t", "o", "buy", D(1), D(1), D(0), datetime(2024, 1, 1)), "timezone"),
    ],
)
def test_nonsense_fills_are_refused(bad, complaint):
    with pytest.raises(ValueError, match=complaint):
        book([bad])


def _random_fills(rng: random.Random) -> list[LedgerFill]:
    """A random bot history: multi-fill orders, oversells, sells while flat, duplicates."""
    out: list[LedgerFill] = []
    held = D(0)
    order = "o0"
    for n in range(rng.randint(1, 30)):
        price = D(rng.randint(1, 10**10)) / 10**8
        if rng.random() < 0.55:
            size = D(rng.randint(1, 10**9)) / 10**8
            if rng.random() < 0.6:
                order = f"o{n}"
            side = "buy"
            held += size
        else:
            fraction = D(rng.choice(["0.1", "0.5", "0.97", "0.9999", "1", "1.3"]))
            size = (held * fraction).quantize(INCREMENT) or rng.randint(1, 1000) * INCREMENT
            side = "sell"
            held = max(held - size, D(0))
        fee = (size * price * D(rng.randint(0, 60)) / 10**4).quantize(D("1E-12"))
        # Repeated seconds: the executor's sequence, never the trade id, breaks the tie.
        made = fill(n // 2, side, size, price, fee, order, trade_id=f"x{rng.random()}")
        out.append(replace(made, sequence=n))
        if rng.random() < 0.1:
            out.append(out[rng.randrange(len(out))])
    return out


@pytest.mark.parametrize("allocation", ["pro_rata", "fifo"])
def test_random_histories_keep_every_invariant(allocation):
    rng = random.Random(20240601)
    for _ in range(300):
        history = _random_fills(rng)
        min_size = D(rng.choice(["0", "0.001", "0.5"]))
        result = book(history, min_size=min_size, allocation=allocation)
        shuffled = history[:]
        rng.shuffle(shuffled)
        assert book(shuffled, min_size=min_size, allocation=allocation) == result

        unique = {f.trade_id: f for f in history}.values()
        buys = [f for f in unique if f.side == "buy"]
        sells = [f for f in unique if f.side == "sell"]
        positions = result.positions
        exits = [e for p in positions for e in p.exits]
        held = sum(p.quantity for p in positions)
        assert sum(f.size for f in buys) == sum(e.size for e in exits) + held + sum(
            p.dust for p in positions
        )
        unmatched = result.unmatched_exit_size + sum(p.unmatched_exit_size for p in positions)
        assert sum(f.size for f in sells) == sum(e.size for e in exits) + unmatched

        mark = D(rng.randint(1, 10**10)) / 10**8
        realized = sum(p.realized_pnl for p in positions)
        unrealized = sum(unrealized_pnl(p, mark) for p in positions)
        cash_out = sum(e.size * e.price - e.fee for e in exits)
        cash_in = sum(f.size * f.price + f.fee for f in buys)
        assert realized + unrealized == cash_out - cash_in + held * mark


def test_each_exit_keeps_why_its_order_was_asked_and_the_last_one_says_why_it_closed() -> None:
    entry, partial, stop = fills(("buy", "2", "10"), ("sell", "1", "11"), ("sell", "1", "9"))
    why = {"o1": "SIGNAL", "o2": "SIGNAL", "o3": "STOP_ON_EXCHANGE"}
    (position,) = book(
        [replace(f, reason=why[f.client_order_id]) for f in (entry, partial, stop)]
    ).positions
    assert [e.reason for e in position.exits] == ["SIGNAL", "STOP_ON_EXCHANGE"]
    assert [f.reason for f in position.entries] == ["SIGNAL"]
    assert position.status == "closed" and position.exit_reason == "STOP_ON_EXCHANGE"
    (still_open,) = book(
        [replace(entry, reason="SIGNAL"), replace(partial, reason="SIGNAL")]
    ).positions
    assert still_open.exit_reason is None  # open: nothing closed it yet


def test_a_fill_with_a_reason_and_the_same_fill_without_one_are_one_fill() -> None:
    entry, exit_ = fills(("buy", "2", "10"), ("sell", "2", "11"))
    told = replace(exit_, reason="STOP_ON_EXCHANGE")
    (position,) = book([entry, told, exit_]).positions  # no FillConflict: not a fact of the fill
    assert len(position.exits) == 1 and position.exit_reason == "STOP_ON_EXCHANGE"
