"""The ledger service in-process on a real NATS server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import nats
import pytest
from sqlmodel import Session

from services.ledger.app import build
from services.ledger.config import LedgerSettings
from services.ledger.positions import differences
from services.ledger.rebuild import rebuild
from services.ledger.store import PositionRow
from shared import subjects
from shared.catalog import load_catalog
from shared.contracts import Fill, OrderEvent, PositionAnswer, PositionUpdate
from shared.service import Service
from shared.streams import DLQ, LEDGER, ORDERS, SAFETY, ensure_streams
from tests.support.signing import signed, signed_by_executor

T0 = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)
CATALOG = """
[products.ETH-BTC]
base_min_size = "0.001"
base_increment = "0.00000001"
quote_increment = "0.00000001"
quote_min_size = "0.0001"

[products.XRP-ETH]
base_min_size = "1"
base_increment = "1"
quote_increment = "0.00000001"
quote_min_size = "0.001"

[bots.l-1]
product_id = "ETH-BTC"
quote_size = "0.01"

[bots.l-fifo]
product_id = "ETH-BTC"
quote_size = "0.01"
exit_allocation = "fifo"
"""


class Ledger:
    def __init__(self, service: Service, nc: nats.NATS, config: Path):
        self.service, self.nc, self.config = service, nc, config
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.http_app()), base_url="http://ledger"
        )

    async def send(self, event: OrderEvent) -> None:
        """As the executor publishes it: signed with its key."""
        subject = subjects.for_token(subjects.ORDERS_EVENTS, event.bot_id)
        payload = event.model_dump_json().encode()
        await self.nc.jetstream().publish(
            subject, payload, stream=ORDERS.name, headers=signed_by_executor(subject, payload)
        )

    async def position(self, bot: str, mode: str = "mock", sequence: int = 1) -> dict:
        for _ in range(600):  # up to 30 s on a loaded machine; returns as soon as it is there
            response = await self.http.get(f"/positions/{bot}", params={"mode": mode})
            if response.status_code == 200 and response.json()["position"]["sequence"] >= sequence:
                return response.json()
            await asyncio.sleep(0.05)
        raise AssertionError(f"no position of sequence {sequence} for {bot}")


def event(
    n: int, side: str, price: str, size: str, *, bot: str = "l-1", order: str | None = None,
    fee: str = "0", mode: str = "mock", at: datetime | None = None, status: str = "filled",
    fills: int = 1,
) -> OrderEvent:  # fmt: skip
    order = order or f"order-{bot}-{n}"
    at = at or T0 + timedelta(minutes=n)
    return OrderEvent(
        message_id=f"{order}-{status}",
        correlation_id=f"intent-{n}",
        time=at,
        bot_id=bot,
        product_id="ETH-BTC",
        mode=mode,
        intent_id=f"intent-{n}",
        client_order_id=order,
        action="exit" if side == "sell" else "entry",
        side=side,
        status=status,
        fills=[
            Fill(
                trade_id=f"{order}-t{k}",
                price=Decimal(price),
                size=Decimal(size),
                fee=Decimal(fee),
                time=at,
            )
            for k in range(fills)
        ]
        if status == "filled"
        else [],
    )


@pytest.fixture
async def ledger(tmp_path: Path, database_url: str, nats_url: str) -> AsyncIterator[Ledger]:
    config = tmp_path / "bots.toml"
    config.write_text(CATALOG)
    settings = LedgerSettings(
        nats_url=nats_url, database_url=database_url, config_file=config, data_dir=tmp_path,
        outbox_poll_s=0.2,
    )  # fmt: skip
    service = build(settings)
    await service.start()
    nc = await nats.connect(nats_url)
    await ensure_streams(nc.jetstream())
    running = Ledger(service, nc, config)
    try:
        yield running
    finally:
        await running.http.aclose()
        await nc.close()
        await service.stop()


async def stream_subjects(nc: nats.NATS, stream: str, subject: str) -> list[dict]:
    js = nc.jetstream()
    info = await js.stream_info(stream)
    found = []
    for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
        message = await js.get_msg(stream, seq)
        if message.subject == subject:
            found.append(json.loads(message.data))
    return found


async def settled(read, expected, count: int | None = None, quiet_s: float = 0.5):
    """Poll ``read`` until it gives ``expected`` (or ``count`` items), then wait ``quiet_s`` more
    and read again, so a late duplicate would still be seen."""
    for _ in range(600):
        found = await read()
        if found == expected or (count is not None and len(found) >= count):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(quiet_s)
    return await read()


async def test_designs_worked_example_books_through_the_service(ledger: Ledger) -> None:
    # DESIGN.md: buy 100 @ 10, buy 100 @ 15, sell 50 @ 12 (-25), sell 100 @ 20 (+750).
    for n, (side, price, size) in enumerate(
        [("buy", "10", "100"), ("buy", "15", "100"), ("sell", "12", "50"), ("sell", "20", "100")]
    ):
        await ledger.send(event(n, side, price, size))
    detail = await ledger.position("l-1", sequence=4)
    position = detail["position"]
    assert position["average_entry_price"] == "12.5"
    assert Decimal(position["quantity"]) == 50
    assert Decimal(position["realized_pnl"]) == Decimal(725)
    assert [Decimal(e["realized_pnl"]) for e in detail["exits"]] == [-25, 750]
    # Pro rata: every exit takes from both tranches, so the average entry stays at 12.5.
    assert [len(e["per_tranche"]) for e in detail["exits"]] == [2, 2]
    # The bucket follows the stored position through the outbox, a moment later.
    assert position["sequence"] == 4  # the fills booked
    bucket = await ledger.nc.jetstream().key_value("tranche_positions")
    for _ in range(600):
        stored = PositionUpdate.model_validate_json((await bucket.get("l-1")).value)
        if stored.sequence == 4:
            break
        await asyncio.sleep(0.05)
    assert stored.sequence == 4 and stored.realized_pnl == Decimal(725)


async def test_a_fill_is_booked_once_however_often_it_arrives(ledger: Ledger) -> None:
    first = event(1, "buy", "0.09", "1", fee="0.00054")
    await ledger.send(first)
    await ledger.send(first)  # a redelivery / re-publish with the same id
    await ledger.send(first.model_copy(update={"message_id": "other-id"}))  # same fills, new id
    await ledger.send(event(2, "buy", "0.1", "1"))
    detail = await ledger.position("l-1", sequence=2)
    assert Decimal(detail["position"]["quantity"]) == 2
    fills = (await ledger.http.get("/fills", params={"bot_id": "l-1"})).json()
    assert [f["trade_id"] for f in fills] == ["order-l-1-1-t0", "order-l-1-2-t0"]

    async def sequences() -> list[int]:
        published = await stream_subjects(
            ledger.nc, "TRANCHE_LEDGER", "tranche.ledger.positions.l-1"
        )
        return [p["sequence"] for p in published]

    assert await settled(sequences, [1, 2]) == [1, 2]


async def test_books_corrected_by_a_late_earlier_event_reach_every_reader(ledger: Ledger) -> None:
    """The sell's first event arrives last: the ledger books the sell where it happened and the
    corrected books (realized +2, not -3) are what the stream, the bucket and the API say."""
    buy_1, sell, buy_2 = (
        event(1, "buy", "10", "1").model_copy(update={"sequence": 1}),
        event(2, "sell", "12", "1").model_copy(update={"sequence": 5}),
        event(3, "buy", "20", "1").model_copy(update={"sequence": 3}),
    )
    for sent in (buy_1, sell, buy_2):
        await ledger.send(sent)
    before = await ledger.position("l-1", sequence=3)
    assert Decimal(before["position"]["realized_pnl_total"]) == -3  # b1, b2, then s1 pro rata
    late = sell.model_copy(
        update={"message_id": "sell-partial", "status": "partially_filled", "sequence": 2}
    )
    await ledger.send(late)

    async def told() -> list[str]:
        published = await stream_subjects(
            ledger.nc, "TRANCHE_LEDGER", "tranche.ledger.positions.l-1"
        )
        return [p["realized_pnl_total"] for p in published]

    # b1; b1 s1 (+2, flat); b1 b2 s1 (-3: the sell booked after b2); b1 s1 b2, told again.
    assert await settled(told, ["0", "2", "-3", "2"]) == ["0", "2", "-3", "2"]
    answer = (await ledger.http.get("/positions/l-1", params={"mode": "mock"})).json()
    bucket = await ledger.nc.jetstream().key_value("tranche_positions")
    in_bucket = PositionUpdate.model_validate_json((await bucket.get("l-1")).value)
    # What a trader reads is the same everywhere (the API recomputes, with ids of its own).
    assert differences(PositionUpdate.model_validate(answer["position"]), in_bucket) == []
    assert in_bucket.realized_pnl_total == 2 and in_bucket.quantity == 1
    assert in_bucket.average_entry_price == 20


async def test_a_fill_before_its_submitted_event_is_booked(ledger: Ledger) -> None:
    await ledger.send(event(1, "buy", "0.09", "1"))
    await ledger.send(event(1, "buy", "0.09", "1", status="submitted"))
    detail = await ledger.position("l-1")
    assert Decimal(detail["position"]["quantity"]) == 1


async def test_a_fourth_tranche_is_booked_and_reported_once(ledger: Ledger) -> None:
    for n in range(4):
        await ledger.send(event(n, "buy", "0.09", "1"))
    await ledger.send(event(3, "buy", "0.09", "1"))  # the fourth again: still one report
    detail = await ledger.position("l-1", sequence=4)
    assert len(detail["position"]["tranches"]) == 4 and detail["position"]["tranche_breach"]

    async def reports() -> list[dict]:
        return await stream_subjects(ledger.nc, LEDGER.name, "tranche.ledger.breaches.l-1")

    found = await settled(reports, None, count=1)
    assert [(r["tranches"], r["max_tranches"]) for r in found] == [(4, 3)]
    assert found[0]["bot_id"] == "l-1" and "4 entry tranches" in found[0]["message"]
    # The ledger reports; only safety publishes safety events (it turns this one into its own).
    assert await stream_subjects(ledger.nc, SAFETY.name, "tranche.safety.events") == []


async def test_mock_and_production_books_never_mix(ledger: Ledger) -> None:
    await ledger.send(event(1, "buy", "0.09", "1", mode="mock"))
    await ledger.send(event(2, "buy", "0.1", "3", mode="production"))
    mock = await ledger.position("l-1", mode="mock")
    production = await ledger.position("l-1", mode="production")
    assert Decimal(mock["position"]["quantity"]) == 1
    assert Decimal(production["position"]["quantity"]) == 3
    listed = (await ledger.http.get("/positions", params={"mode": "production"})).json()
    assert [v["position"]["mode"] for v in listed] == ["production"]
    summary = (await ledger.http.get("/summary", params={"mode": "mock"})).json()
    assert summary["open_positions"] == 1


async def test_fifo_bot_takes_exits_from_the_oldest_tranche(ledger: Ledger) -> None:
    await ledger.send(event(1, "buy", "10", "100", bot="l-fifo"))
    await ledger.send(event(2, "buy", "15", "100", bot="l-fifo"))
    await ledger.send(event(3, "sell", "12", "50", bot="l-fifo"))
    detail = await ledger.position("l-fifo", sequence=3)
    assert detail["allocation"] == "fifo"
    (exit_,) = detail["exits"]
    assert [part["tranche"] for part in exit_["per_tranche"]] == [1]
    assert Decimal(exit_["realized_pnl"]) == Decimal(100)  # 50 x (12 - 10)
    assert Decimal(detail["position"]["average_entry_price"]) > Decimal("12.5")


async def test_unrealized_pnl_needs_a_price_and_uses_the_latest(ledger: Ledger) -> None:
    await ledger.send(event(1, "buy", "10", "100", fee="2.5"))
    detail = await ledger.position("l-1")
    assert detail["unrealized_pnl"] is None and "never guessed" in detail["unrealized_note"]
    tick = {"product_id": "ETH-BTC", "price": "11", "time": (T0 + timedelta(hours=1)).isoformat()}
    await ledger.nc.publish("tranche.market.ticker.ETH-BTC", json.dumps(tick).encode())
    for _ in range(600):
        detail = (await ledger.http.get("/positions/l-1")).json()
        if detail["unrealized_pnl"] is not None:
            break
        await asyncio.sleep(0.05)
    assert Decimal(detail["unrealized_pnl"]) == Decimal("97.5")  # 100 x 11 - (1000 + 2.5)


async def test_daily_realized_pnl_and_summary_reconcile(ledger: Ledger) -> None:
    day1, day2 = T0, T0 + timedelta(days=1)
    await ledger.send(event(1, "buy", "10", "100", at=day1))
    await ledger.send(event(2, "sell", "12", "50", at=day1 + timedelta(hours=1)))
    await ledger.send(event(3, "sell", "9", "50", at=day2))
    await ledger.position("l-1", sequence=3)
    days = (await ledger.http.get("/pnl/daily", params={"bot_id": "l-1"})).json()
    assert [(d["day"], Decimal(d["realized_pnl"])) for d in days] == [
        ("2018-01-20", Decimal(100)),
        ("2018-01-21", Decimal(-50)),
    ]
    summary = (await ledger.http.get("/summary")).json()
    assert Decimal(summary["realized_pnl"]) == sum(Decimal(d["realized_pnl"]) for d in days)


async def test_an_order_event_without_the_executors_signature_is_never_booked(
    ledger: Ledger,
) -> None:
    subject = "tranche.orders.events.l-1"
    js = ledger.nc.jetstream()
    unsigned = event(1, "buy", "0.09", "5").model_dump_json().encode()
    await js.publish(subject, unsigned, stream=ORDERS.name)
    by_safety = event(2, "buy", "0.09", "7").model_dump_json().encode()  # the wrong key
    await js.publish(subject, by_safety, stream=ORDERS.name, headers=signed(subject, by_safety))
    elsewhere = event(3, "buy", "0.09", "9").model_dump_json().encode()  # signed for another bot
    await js.publish(
        subject,
        elsewhere,
        stream=ORDERS.name,
        headers=signed_by_executor("tranche.orders.events.l-fifo", elsewhere),
    )
    await ledger.send(event(4, "buy", "0.1", "1"))  # the executor's: after the others, in order
    detail = await ledger.position("l-1")
    assert Decimal(detail["position"]["quantity"]) == 1  # only the signed fill is money
    letters = await stream_subjects(ledger.nc, DLQ.name, "tranche.dlq.ledger")
    assert [reason["code"] for letter in letters for reason in letter["reasons"]] == [
        "ORDER_EVENT_NOT_SIGNED"
    ] * 3


async def test_an_order_event_on_another_bots_subject_is_never_booked(ledger: Ledger) -> None:
    """Signed by the executor, but l-1's fill on l-fifo's subject: refused on the subject's
    token (the handler reads it from the message it takes from FastStream's context)."""
    subject = "tranche.orders.events.l-fifo"
    misplaced = event(1, "buy", "0.09", "5").model_dump_json().encode()
    await ledger.nc.jetstream().publish(
        subject, misplaced, stream=ORDERS.name, headers=signed_by_executor(subject, misplaced)
    )
    await ledger.send(event(2, "buy", "0.1", "1", bot="l-fifo"))  # after it, in order
    detail = await ledger.position("l-fifo")
    assert Decimal(detail["position"]["quantity"]) == 1  # only the fill on its own subject
    assert (await ledger.http.get("/positions/l-1")).status_code == 404  # nothing booked
    letters = await stream_subjects(ledger.nc, DLQ.name, "tranche.dlq.ledger")
    assert [reason["code"] for letter in letters for reason in letter["reasons"]] == [
        "SUBJECT_MISMATCH"
    ]


async def test_clear_errors_for_unknown_bots_and_bad_modes(ledger: Ledger) -> None:
    assert (await ledger.http.get("/positions/nobody")).status_code == 404
    assert (await ledger.http.get("/positions/l-1")).status_code == 404  # nothing booked yet
    bad = await ledger.http.get("/positions", params={"mode": "paper"})
    assert bad.status_code == 422 and "mock" in bad.text


async def test_query_answers_the_current_position(ledger: Ledger) -> None:
    await ledger.send(event(1, "buy", "0.09", "1"))
    await ledger.position("l-1")
    reply = await ledger.nc.request("tranche.ledger.query.l-1", b"", timeout=3)
    answer = PositionAnswer.model_validate_json(reply.data)
    assert answer.position is not None and answer.position.quantity == 1
    none = await ledger.nc.request("tranche.ledger.query.l-1", b'{"mode":"production"}', timeout=3)
    assert PositionAnswer.model_validate_json(none.data).reason.code == "NO_POSITION"
    garbled = await ledger.nc.request("tranche.ledger.query.l-1", b'{"mode":', timeout=3)
    assert PositionAnswer.model_validate_json(garbled.data).reason.code == "INVALID_QUERY"


async def test_rebuild_finds_and_repairs_a_tampered_position(ledger: Ledger) -> None:
    await ledger.send(event(1, "buy", "0.09", "1"))
    await ledger.send(event(2, "buy", "0.1", "1"))
    detail = await ledger.position("l-1", sequence=2)
    engine, catalog = ledger.service.engine, load_catalog(ledger.config)
    assert rebuild(engine, catalog, None, "pro_rata") == []
    with Session(engine) as session:
        row = session.get(PositionRow, ("l-1", "mock"))
        tampered = json.loads(row.payload) | {"quantity": "5"}
        row.payload = json.dumps(tampered)
        session.add(row)
        session.commit()
    (found,) = rebuild(engine, catalog, None, "pro_rata")
    assert (found.field, found.stored, found.recomputed) == ("quantity", "5", "2")
    rebuild(engine, catalog, None, "pro_rata", apply=True)
    assert rebuild(engine, catalog, None, "pro_rata") == []
    again = (await ledger.http.get("/positions/l-1")).json()
    assert again["position"]["quantity"] == detail["position"]["quantity"]


async def test_a_bot_created_at_run_time_is_booked_and_still_reported_after_its_removal(
    ledger: Ledger,
) -> None:
    from shared.bots import BotRecord
    from shared.catalog import Bot

    assert (await ledger.http.get("/positions/l-new")).status_code == 404  # not a bot (yet)
    bucket = await ledger.nc.jetstream().key_value(subjects.BOTS_BUCKET)
    config = Bot(product_id="ETH-BTC", quote_size=Decimal("0.01"), exit_allocation="fifo")

    def record(status: str) -> bytes:
        return BotRecord(
            bot_id="l-new", config=config, status=status, change="created", changed_at=T0,
            changed_by="test",
        ).model_dump_json().encode()  # type: ignore[arg-type]  # fmt: skip

    await bucket.create("l-new", record("active"))
    await ledger.send(event(1, "buy", "0.05", "1", bot="l-new"))
    position = await ledger.position("l-new")
    assert position["position"]["quantity"] == "1"
    await bucket.put("l-new", record("removed"))
    await ledger.send(event(2, "sell", "0.06", "1", bot="l-new"))
    after = await ledger.position("l-new", sequence=2)
    assert after["position"]["status"] == "flat"
    summary = (await ledger.http.get("/summary")).json()
    assert summary["bots"] == 1 and Decimal(summary["realized_pnl"]) == Decimal("0.01")
