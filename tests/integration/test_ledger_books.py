"""Issue 16 through the running ledger on SQLite and PostgreSQL: the books say what happened.

Each test is one defect that was reproduced from outside (numbered as in the issue)."""

# ruff: noqa: F811  (the imported ``ledger`` fixture is named as each test's parameter)

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

from services.ledger.app import FILL_CONFLICTS
from shared.contracts import Fill, OrderEvent
from shared.streams import DLQ
from tests.integration.test_ledger_service import (
    T0,
    Ledger,
    ledger,  # noqa: F401  (the fixture)
    settled,
    stream_subjects,
)
from tests.support.signing import signed_by_executor

D = Decimal


def order_event(
    sequence: int | None, order: str, side: str, status: str, fills: list[Fill], *,
    bot: str = "l-1",
) -> OrderEvent:  # fmt: skip
    return OrderEvent(
        message_id=f"{order}-{status}-{sequence}",
        correlation_id=f"intent-{order}",
        time=T0,
        bot_id=bot,
        product_id="ETH-BTC",
        mode="mock",
        intent_id=f"intent-{order}",
        client_order_id=order,
        action="exit" if side == "sell" else "entry",
        side=side,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        fills=fills,
        sequence=sequence,
    )


def fill(trade_id: str, size: str, price: str, fee: str = "0", **extra) -> Fill:
    return Fill(trade_id=trade_id, price=D(price), size=D(size), fee=D(fee), time=T0, **extra)


async def settle_on(ledger: Ledger, bot: str, check, tries: int = 400) -> dict:
    """The bot's position detail once ``check(detail)`` holds (or the last one seen)."""
    detail: dict = {}
    for _ in range(tries):
        response = await ledger.http.get(f"/positions/{bot}")
        if response.status_code == 200:
            detail = response.json()
            if check(detail):
                return detail
        await asyncio.sleep(0.05)
    return detail


async def dead_letters(ledger: Ledger) -> list[dict]:
    return await stream_subjects(ledger.nc, DLQ.name, "tranche.dlq.ledger")


# 1
async def test_a_buy_then_a_sell_at_one_instant_book_in_the_executors_sequence(
    ledger: Ledger,
) -> None:
    await ledger.send(
        order_event(1, "o-buy", "buy", "filled", [fill("zz-1", "0.2", "0.05", "0.00018")])
    )
    await ledger.send(
        order_event(2, "o-sell", "sell", "filled", [fill("aa-1", "0.2", "0.06", "0.00018012")])
    )
    detail = await settle_on(ledger, "l-1", lambda d: d["position"]["sequence"] >= 2)
    assert detail["position"]["status"] == "flat"
    assert D(detail["position"]["quantity"]) == 0
    summary = (await ledger.http.get("/summary")).json()
    assert D(summary["fees_paid"]) == D("0.00036012")
    assert D(summary["realized_pnl"]) == D("0.2") * D("0.01") - D("0.00036012")


# 2
async def test_an_exit_whose_last_fills_are_below_min_size_books_them_all(ledger: Ledger) -> None:
    await ledger.send(order_event(1, "o-buy", "buy", "filled", [fill("b1", "0.02", "30")]))
    parts = [("partially_filled", "s1", "0.0195"), ("partially_filled", "s2", "0.0004"),
             ("filled", "s3", "0.0001")]  # fmt: skip
    for n, (status, trade_id, size) in enumerate(parts, start=2):
        await ledger.send(order_event(n, "o-sell", "sell", status, [fill(trade_id, size, "30")]))
    detail = await settle_on(ledger, "l-1", lambda d: d["position"]["sequence"] >= 4)
    assert detail["position"]["status"] == "flat"
    assert D(detail["position"]["realized_pnl_total"]) == 0
    history = (await ledger.http.get("/positions/l-1/history")).json()
    (closed,) = history["positions"]
    assert [D(e["size"]) for e in closed["exits"]] == [D("0.0195"), D("0.0004"), D("0.0001")]
    assert D(closed["dust"]) == 0 and D(closed["realized_pnl"]) == 0


async def test_an_exit_cancelled_below_min_size_closes_with_dust_at_the_same_sequence(
    ledger: Ledger,
) -> None:
    await ledger.send(order_event(1, "o-buy", "buy", "filled", [fill("b1", "0.02", "30")]))
    await ledger.send(
        order_event(2, "o-sell", "sell", "partially_filled", [fill("s1", "0.0195", "30")])
    )
    open_ = await settle_on(ledger, "l-1", lambda d: d["position"]["sequence"] >= 2)
    assert open_["position"]["status"] == "open"  # the exit order may still fill
    assert D(open_["position"]["quantity"]) == D("0.0005")
    await ledger.send(order_event(3, "o-sell", "sell", "cancelled", []))
    closed = await settle_on(ledger, "l-1", lambda d: d["position"]["status"] == "flat")
    assert closed["position"]["sequence"] == 2  # still counts the fills
    history = (await ledger.http.get("/positions/l-1/history")).json()
    (position,) = history["positions"]
    assert D(position["dust"]) == D("0.0005") and D(position["dust_cost"]) == D("0.015")
    published = await stream_subjects(ledger.nc, "TRANCHE_LEDGER", "tranche.ledger.positions.l-1")
    assert [p["status"] for p in published][-1] == "flat"


# 3
async def test_one_trade_id_twice_inside_an_event_is_booked_once(ledger: Ledger) -> None:
    twice = [fill("t1", "1", "0.05"), fill("t1", "1", "0.05"), fill("t2", "2", "0.05")]
    await ledger.send(order_event(1, "o-buy", "buy", "filled", twice))
    detail = await settle_on(ledger, "l-1", lambda d: d["position"]["sequence"] >= 2)
    assert D(detail["position"]["quantity"]) == 3
    assert await dead_letters(ledger) == []


# 4
async def test_a_changed_fill_is_refused_loudly_with_both_versions(ledger: Ledger) -> None:
    before = FILL_CONFLICTS._value.get()
    await ledger.send(order_event(1, "o-buy", "buy", "filled", [fill("t1", "30", "0.05")]))
    await settle_on(ledger, "l-1", lambda d: d["position"]["sequence"] >= 1)
    await ledger.send(order_event(2, "o-buy", "buy", "filled", [fill("t1", "31", "0.05")]))
    await ledger.send(
        order_event(3, "o-other", "buy", "filled", [fill("t1", "30", "0.05")], bot="l-fifo")
    )
    letters = await settled(lambda: dead_letters(ledger), None, count=2)
    assert [letter["reasons"][0]["code"] for letter in letters] == ["FILL_CONFLICT"] * 2
    # Two bots' subjects: the letters may come in either order.
    changed, elsewhere = sorted(
        (letter["reasons"][0]["message"] for letter in letters), key=lambda m: "l-fifo" in m
    )
    assert "size 30" in changed and "size 31" in changed
    assert "bot_id l-1" in elsewhere and "bot_id l-fifo" in elsewhere
    detail = (await ledger.http.get("/positions/l-1")).json()
    assert D(detail["position"]["quantity"]) == 30
    assert (await ledger.http.get("/positions/l-fifo")).status_code == 404
    assert FILL_CONFLICTS._value.get() == before + 2
    metrics = (await ledger.http.get("/metrics")).text
    assert "tranche_ledger_fill_conflicts_total" in metrics


# 5 and 6
async def test_tiny_and_long_decimals_are_stored_and_written_exactly(ledger: Ledger) -> None:
    price = "0.000183332200197643035183"  # 24 decimals
    await ledger.send(
        order_event(1, "o-buy", "buy", "filled", [fill("t1", "1", price, "0.0000000000000000001")])
    )
    detail = await settle_on(ledger, "l-1", lambda d: d["position"]["sequence"] >= 1)
    assert detail["position"]["cost_basis"] == "0.000183332200197643135183"
    (booked,) = (await ledger.http.get("/fills", params={"bot_id": "l-1"})).json()
    assert booked["fee"] == "0.0000000000000000001"
    assert booked["price"] == price
    assert booked["size"] == "1"


# 7
async def test_a_closed_position_keeps_its_entries_exits_and_duration(ledger: Ledger) -> None:
    await ledger.send(order_event(1, "o-buy", "buy", "filled", [fill("b1", "2", "10", "0.02")]))
    later = fill("s1", "2", "12", "0.024").model_copy(update={"time": T0 + timedelta(hours=2)})
    await ledger.send(order_event(2, "o-sell", "sell", "filled", [later]))
    await settle_on(ledger, "l-1", lambda d: d["position"]["status"] == "flat")
    history = (await ledger.http.get("/positions/l-1/history")).json()
    (closed,) = history["positions"]
    assert closed["status"] == "closed" and closed["duration_s"] == 7200
    assert [(e["trade_id"], e["price"]) for e in closed["entries"]] == [("b1", "10")]
    assert [(e["trade_id"], e["price"]) for e in closed["exits"]] == [("s1", "12")]
    assert closed["realized_pnl"] == "3.956" and closed["fees_paid"] == "0.044"
    assert [t["entry_price"] for t in closed["tranches"]] == ["10"]
    csv = await ledger.http.get("/positions/l-1/history.csv")
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0].startswith("position,kind,time,")
    assert len(lines) == 3


# Issue 22: each exit booked with why its order was asked.
async def test_each_fill_is_booked_with_its_intents_reason_and_shown_in_the_history(
    ledger: Ledger,
) -> None:
    def because(event: OrderEvent, code: str) -> OrderEvent:
        return event.model_copy(update={"intent_reason": code})

    await ledger.send(
        because(order_event(1, "o-buy", "buy", "filled", [fill("b1", "2", "10")]), "SIGNAL")
    )
    partial = fill("s1", "1", "11").model_copy(update={"time": T0 + timedelta(hours=1)})
    await ledger.send(because(order_event(2, "o-sell", "sell", "filled", [partial]), "SIGNAL"))
    stopped = fill("s2", "1", "9").model_copy(update={"time": T0 + timedelta(hours=2)})
    await ledger.send(
        because(order_event(3, "o-stop", "sell", "filled", [stopped]), "STOP_ON_EXCHANGE")
    )
    await settle_on(ledger, "l-1", lambda d: d["position"]["status"] == "flat")
    (closed,) = (await ledger.http.get("/positions/l-1/history")).json()["positions"]
    assert [e["reason"] for e in closed["entries"]] == ["SIGNAL"]
    assert [(e["trade_id"], e["reason"]) for e in closed["exits"]] == [
        ("s1", "SIGNAL"),
        ("s2", "STOP_ON_EXCHANGE"),
    ]
    assert closed["exit_reason"] == "STOP_ON_EXCHANGE"
    fills = (await ledger.http.get("/fills", params={"bot_id": "l-1"})).json()
    assert [f["intent_reason"] for f in fills] == ["SIGNAL", "SIGNAL", "STOP_ON_EXCHANGE"]
    csv = (await ledger.http.get("/positions/l-1/history.csv")).text.strip().splitlines()
    assert csv[0].endswith(",reason")
    assert [line.rsplit(",", 1)[1] for line in csv[1:]] == ["SIGNAL", "SIGNAL", "STOP_ON_EXCHANGE"]


async def test_an_order_event_from_before_intent_reasons_is_still_booked(ledger: Ledger) -> None:
    old = order_event(1, "o-buy", "buy", "filled", [fill("b1", "2", "10")])
    assert "intent_reason" not in old.model_dump_json()  # what an older executor sends
    await ledger.send(old)
    await ledger.send(order_event(2, "o-sell", "sell", "filled", [fill("s1", "2", "11")]))
    await settle_on(ledger, "l-1", lambda d: d["position"]["status"] == "flat")
    (closed,) = (await ledger.http.get("/positions/l-1/history")).json()["positions"]
    assert closed["realized_pnl"] == "2" and closed["exit_reason"] is None
    assert [e["reason"] for e in closed["exits"]] == [None]
    assert await dead_letters(ledger) == []


# 9
async def test_a_reversal_and_a_correction_are_booked_as_adjustments(ledger: Ledger) -> None:
    fills = [fill("t1", "2", "10", entry_id="e1"), fill("t2", "1", "13", entry_id="e2")]
    await ledger.send(order_event(1, "o-buy", "buy", "filled", fills))
    await settle_on(ledger, "l-1", lambda d: d["position"]["sequence"] >= 2)
    reversal = fill("t2", "1", "13", entry_id="e3", trade_type="REVERSAL")
    correction = fill("t1", "3", "10", entry_id="e4", trade_type="CORRECTION")
    await ledger.send(order_event(2, "o-buy", "buy", "filled", [reversal, correction]))
    detail = await settle_on(ledger, "l-1", lambda d: d["position"]["sequence"] >= 4)
    assert D(detail["position"]["quantity"]) == 3
    assert D(detail["position"]["cost_basis"]) == 30
    history = (await ledger.http.get("/positions/l-1/history")).json()
    changes = {a["entry_id"]: a for a in history["adjustments"]}
    assert D(changes["e3"]["quantity_change"]) == -1
    assert D(changes["e4"]["quantity_change"]) == 1


async def test_history_of_an_unknown_bot_is_a_404(ledger: Ledger) -> None:
    response = await ledger.http.get("/positions/nobody/history")
    assert response.status_code == 404


async def test_a_fill_booked_before_entry_ids_is_not_booked_again_with_one(ledger: Ledger) -> None:
    await ledger.send(order_event(1, "o-buy", "buy", "filled", [fill("t1", "1", "0.05")]))
    await settle_on(ledger, "l-1", lambda d: d["position"]["sequence"] >= 1)
    same = fill("t1", "1", "0.05", entry_id="e1")
    await ledger.send(order_event(2, "o-buy", "buy", "filled", [same, fill("t2", "2", "0.05")]))
    detail = await settle_on(ledger, "l-1", lambda d: d["position"]["sequence"] >= 2)
    assert D(detail["position"]["quantity"]) == 3
    assert await dead_letters(ledger) == []


# 8
async def test_a_dead_lettered_fill_is_booked_once_when_replayed(ledger: Ledger) -> None:
    import base64

    from shared.contracts import DeadLetter, Reason
    from tranche.dlq_cli import replay

    event = order_event(1, "o-buy", "buy", "filled", [fill("t1", "1", "0.05")])
    payload = event.model_dump_json().encode()
    letter = DeadLetter(
        message_id="dlq-ledger-test-1", service="ledger", subject="tranche.orders.events.l-1",
        payload=payload.decode(), payload_base64=base64.b64encode(payload).decode(),
        error="database unavailable", time=T0,
        reasons=[Reason(code="HANDLER_FAILED", message="OperationalError: database unavailable")],
        headers=signed_by_executor("tranche.orders.events.l-1", payload),
    )  # fmt: skip
    await ledger.nc.jetstream().publish("tranche.dlq.ledger", letter.model_dump_json().encode())
    _, sent = await replay(ledger.nc, "dlq-ledger-test-1", "tester")
    assert sent
    detail = await settle_on(ledger, "l-1", lambda d: d["position"]["sequence"] >= 1)
    assert D(detail["position"]["quantity"]) == 1
    _, again = await replay(ledger.nc, "dlq-ledger-test-1", "tester")
    assert not again  # audited: the second replay only says when the first was
    _, forced = await replay(ledger.nc, "dlq-ledger-test-1", "tester", again=True)
    assert forced
    await asyncio.sleep(1)
    detail = (await ledger.http.get("/positions/l-1")).json()
    assert D(detail["position"]["quantity"]) == 1  # the ledger booked the fill once
