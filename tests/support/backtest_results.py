"""Hand-made backtest results for the report's and the sweep's tests (the engine is tested on
its own). Their round trips and open positions are booked here at average cost, as the ledger
books them with pro-rata exits, so that the facts of one result agree with each other."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from tranche.backtest.result import (
    BacktestResult,
    BookedFill,
    BotRun,
    BreakerTrip,
    Decision,
    Mark,
    OpenPosition,
    RoundTrip,
)

T0 = datetime(2018, 1, 22, tzinfo=UTC)
D = Decimal
Side = Literal["BUY", "SELL"]


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def bot(
    bot_id: str = "eth", product: str = "ETH-BTC", quote: str = "BTC", capital: str = "0.3"
) -> BotRun:
    return BotRun(bot_id, product, quote, D(capital))


def fill(
    hours: float,
    side: Side,
    price: str,
    size: str,
    fee: str = "0",
    bot_id: str = "eth",
    product: str = "ETH-BTC",
    reason: str | None = None,
) -> BookedFill:
    why = reason or ("ENTRY" if side == "BUY" else "SIGNAL_EXIT")
    return BookedFill(at(hours), bot_id, product, side, D(price), D(size), D(fee), why)


def marks(prices: Sequence[str], product: str = "ETH-BTC", every_h: float = 1) -> list[Mark]:
    return [Mark(at(i * every_h), product, D(price)) for i, price in enumerate(prices)]


def book(
    fills: Sequence[BookedFill], last_price: dict[str, Decimal]
) -> tuple[list[RoundTrip], list[OpenPosition]]:
    """Positions from fills at average cost: a sell takes its share of the cost basis; the
    position closes when nothing is left. Open ones are marked at ``last_price``."""
    trips: list[RoundTrip] = []
    state: dict[str, dict] = {}
    for f in sorted(fills, key=lambda f: f.at):
        s = state.setdefault(
            f.bot_id, {"qty": D(0), "cost": D(0), "realized": D(0), "fees": D(0), "n": 0}
        )
        if f.side == "BUY":
            if s["qty"] == 0:
                s.update(opened=f.at, bought=D(0), n=0, realized=D(0), fees=D(0), basis=D(0))
            s["qty"] += f.size
            s["cost"] += f.price * f.size + f.fee
            s["basis"] += f.price * f.size + f.fee
            s["bought"] += f.size
            s["n"] += 1
        else:
            released = s["cost"] * f.size / s["qty"]
            s["realized"] += f.price * f.size - f.fee - released
            s["cost"] -= released
            s["qty"] -= f.size
        s["fees"] += f.fee
        if s["qty"] == 0:
            trips.append(
                RoundTrip(
                    f.bot_id,
                    f.product_id,
                    s["opened"],
                    f.at,
                    s["n"],
                    s["bought"],
                    s["basis"],
                    s["realized"],
                    s["fees"],
                    f.reason,
                )
            )
            s["cost"] = D(0)
    still_open = []
    products = {f.bot_id: f.product_id for f in fills}
    for bot_id, s in state.items():
        if s["qty"] > 0:
            product = products[bot_id]
            still_open.append(
                OpenPosition(
                    bot_id,
                    product,
                    s["opened"],
                    s["n"],
                    s["qty"],
                    s["cost"],
                    s["realized"],
                    s["qty"] * last_price[product] - s["cost"],
                    s["fees"],
                )
            )
    return trips, still_open


def result(
    bots: Sequence[BotRun],
    all_marks: Sequence[Mark],
    fills: Sequence[BookedFill] = (),
    decisions: Sequence[Decision] = (),
    breakers: Sequence[BreakerTrip] = (),
    start: datetime | None = None,
    end: datetime | None = None,
    fee_rate: str | None = None,
) -> BacktestResult:
    """A consistent result: positions booked from ``fills``, the period from the first mark to
    the last unless given."""
    last = {m.product_id: m.price for m in sorted(all_marks, key=lambda m: m.at)}
    trips, still_open = book(fills, last)
    return BacktestResult(
        start=start or min(m.at for m in all_marks),
        end=end or max(m.at for m in all_marks),
        bots=list(bots),
        marks=list(all_marks),
        fills=list(fills),
        round_trips=trips,
        open_positions=still_open,
        decisions=list(decisions),
        breakers=list(breakers),
        candles=len(all_marks),
        fee_rate=None if fee_rate is None else D(fee_rate),
    )


def sample() -> BacktestResult:
    """Three days of hourly ETH-BTC and two bots: three round trips (two won, one lost), one
    position still open, rejections, a breaker. Fees are 0.6 % of every fill."""
    prices = [
        f"{D('0.0900') + D('0.0004') * ((i * 7) % 11) - D('0.0002') * (i // 12):.4f}"
        for i in range(72)
    ]
    rate = D("0.006")

    def traded(hours: int, side: Side, size: str, bot_id: str, reason: str | None = None):
        price = prices[hours]
        return fill(
            hours, side, price, size, f"{D(price) * D(size) * rate:f}", bot_id, reason=reason
        )

    fills = [
        traded(2, "BUY", "1", "eth-rsi"),
        traded(5, "BUY", "1", "eth-rsi"),
        traded(9, "SELL", "2", "eth-rsi", "TAKE_PROFIT"),
        traded(14, "BUY", "1", "eth-rsi"),
        traded(20, "SELL", "1", "eth-rsi", "STOP_LOSS"),
        traded(30, "BUY", "1.5", "eth-macd"),
        traded(40, "SELL", "1.5", "eth-macd"),
        traded(60, "BUY", "1", "eth-macd"),
    ]
    decisions = [
        Decision(at(h), b, f"i-{b}-{h}", True) for h, b in ((2, "eth-rsi"), (5, "eth-rsi"))
    ] + [
        Decision(at(3), "eth-rsi", "i-3", False, "ENTRY_COOLDOWN"),
        Decision(at(4), "eth-rsi", "i-4", False, "ENTRY_COOLDOWN"),
        Decision(at(22), "eth-macd", "i-22", False, "DAILY_LOSS_LIMIT"),
    ]
    breakers = [BreakerTrip(at(21), "eth-rsi", "CONSECUTIVE_LOSSES", "2 losing exits in a row")]
    return result(
        [bot("eth-rsi", capital="0.3"), bot("eth-macd", capital="0.3")],
        marks(prices),
        fills,
        decisions,
        breakers,
        end=at(72),
        fee_rate="0.006",
    )


def fake_run(overrides: dict[str, object], size: str = "1") -> BacktestResult:
    """A stand-in for the engine in the sweep's tests: ``bots.eth.stop_loss_pct`` chooses the
    exit price (higher: better), ``bots.eth.confirm_evaluations`` the entry price; a
    ``bots.eth.take_profit_pct`` of 13 raises. ``size`` is what a real run's other arguments
    would be (bound with ``functools.partial``). The fingerprint says which process ran it."""
    if overrides.get("bots.eth.take_profit_pct") == D(13):
        raise RuntimeError("unlucky thirteen")
    stop = D(str(overrides.get("bots.eth.stop_loss_pct") or 1))
    confirm = D(str(overrides.get("bots.eth.confirm_evaluations", 3)))
    entry = D("0.0900") + confirm / 10_000
    exit_price = D("0.0900") + stop / 1000
    made = result(
        [bot("eth")],
        marks(["0.0900", f"{entry}", f"{exit_price}", "0.0910"], every_h=24),
        [fill(24, "BUY", f"{entry}", size), fill(48, "SELL", f"{exit_price}", size)],
    )
    made.fingerprint = str(os.getpid())
    return made
