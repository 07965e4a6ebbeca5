"""The executor in-process on a real NATS server, on SQLite and PostgreSQL, against the mock
exchange: idempotent placing, unknown outcomes, 429/5xx storms, limit orders that time out,
halts, restarts, adoption and refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from pydantic import SecretStr
from sqlmodel import Session, select

from services.executor.app import build
from services.executor.config import ExecutorSettings
from services.executor.exchanges.base import OrderRequest
from services.executor.exchanges.mock import MockExchange, MockOrderRow, Quote
from services.executor.store import OrderRow, pricing_of
from services.executor.trading import TradingStateRow
from shared.catalog import load_catalog
from shared.contracts import OrderApproved, Reason, SafetyEvent, TradeIntent
from shared.db import make_engine
from shared.money import utc_now
from shared.service import Service
from shared.signing import Signer, Verifier, new_key_pair
from shared.streams import ORDERS
from tests.support.signing import ORDER_PUBLIC_KEY, PUBLIC_KEY, signed
from tests.support.waiting import eventually as until

MARKET = [datetime(2018, 1, 20, tzinfo=UTC)]
BOT = "eth-btc-momentum"  # the sample catalog's only ETH-BTC bot


def approval(n: int, mode: str = "mock", decided_at: datetime | None = None, **intent_kw: Any):
    intent = {
        "message_id": f"i-{n}", "correlation_id": f"i-{n}", "time": MARKET[0],
        "intent_id": f"i-{n}", "signal_id": "s", "bot_id": BOT, "product_id": "ETH-BTC",
        "action": "entry", "side": "buy", "quote_size": Decimal("0.01"),
        "temperature": Decimal(80), "band": "hot", "reason": Reason(code="SIGNAL", message="t"),
    } | intent_kw  # fmt: skip
    return OrderApproved(
        message_id=f"d-{n}", correlation_id=f"i-{n}", time=MARKET[0],
        intent=TradeIntent(**intent), client_order_id=f"c-{n}", mode=mode,
        decided_at=decided_at or utc_now(),
    )  # fmt: skip


class Harness:
    def __init__(self, nats_url: str, database_url: str, **settings: Any):
        self.nats_url = nats_url
        self.database_url = database_url
        self.settings = settings
        self.service: Service | None = None
        self.nc: Any = None

    def settings_for(self) -> ExecutorSettings:
        return ExecutorSettings(
            nats_url=self.nats_url, database_url=self.database_url, outbox_poll_s=0.1,
            poll_interval_s=0.05, poll_max_interval_s=0.4, retry_base_delay_s=0.01,
            retry_max_delay_s=0.05, **self.settings,
        )  # fmt: skip

    async def start(self) -> Harness:
        self.service = build(self.settings_for())
        await self.service.start()
        if self.nc is None:
            self.nc = await nats.connect(self.nats_url)
        return self

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
            self.service = None

    @property
    def executor(self):
        return self.service.executor  # type: ignore[union-attr]

    @property
    def exchange(self) -> MockExchange:
        return self.executor.exchange

    async def approve(
        self, message: OrderApproved, msg_id: str | None = None, sign: bool = True
    ) -> None:
        """Publish ``message`` as safety would (signed), or ``sign=False`` as anyone else."""
        subject = f"tranche.orders.approved.{message.intent.bot_id}"
        payload = message.model_dump_json().encode()
        headers = {"Nats-Msg-Id": msg_id or message.message_id}
        await self.nc.jetstream().publish(
            subject,
            payload,
            headers=signed(subject, payload, headers) if sign else headers,
            stream=ORDERS.name,
        )

    async def ticker(self, price: str) -> None:
        MARKET[0] += timedelta(minutes=1)
        body = {"product_id": "ETH-BTC", "price": price, "time": MARKET[0].isoformat()}
        await self.nc.publish("tranche.market.ticker.ETH-BTC", json.dumps(body).encode())
        await self.nc.flush()
        await asyncio.sleep(0.1)

    async def halt(
        self,
        bot: str | None,
        n: int = 1,
        state: str | None = "halted",
        sign: bool = True,
        code: str = "HALT",
    ) -> None:
        event = SafetyEvent(
            message_id=f"halt-{n}", correlation_id=f"halt-{n}", time=MARKET[0], code=code,
            message="operator pressed the kill switch", bot_id=bot, state=state,
            caused_by="operator",
        )  # fmt: skip
        payload = event.model_dump_json().encode()
        await self.nc.jetstream().publish(
            "tranche.safety.events",
            payload,
            headers=signed("tranche.safety.events", payload) if sign else None,
            stream="TRANCHE_SAFETY",
        )

    async def events(self, cid: str) -> list[dict]:
        js = self.nc.jetstream()
        info = await js.stream_info(ORDERS.name)
        found = []
        for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
            try:
                message = await js.get_msg(ORDERS.name, seq)
            except nats.js.errors.NotFoundError:
                continue
            if message.subject.startswith("tranche.orders.events."):
                body = json.loads(message.data)
                if body["client_order_id"] == cid:
                    found.append(body)
        return found

    async def get(self, path: str) -> Any:
        """GET from the executor's HTTP API, in-process."""
        app = self.service.http_app()  # type: ignore[union-attr]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://executor") as client:
            answer = await client.get(path)
        assert answer.status_code == 200, answer.text
        return answer.json()

    async def statuses(self, cid: str) -> list[str]:
        return [event["status"] for event in await self.events(cid)]

    def trading_state(self, bot: str) -> str | None:
        with Session(self.service.engine) as session:  # type: ignore[union-attr]
            row = session.get(TradingStateRow, bot)
            return row.state if row else None

    def exchange_orders(self) -> list[MockOrderRow]:
        with Session(self.service.engine) as session:  # type: ignore[union-attr]
            return list(session.exec(select(MockOrderRow)))

    def order(self, cid: str) -> OrderRow | None:
        with Session(self.service.engine) as session:  # type: ignore[union-attr]
            return session.get(OrderRow, cid)


def final(harness: Harness, cid: str, status: str) -> Callable[[], Any]:
    async def probe():
        statuses = await harness.statuses(cid)
        return statuses if status in statuses else None

    return probe


@pytest.fixture
async def harness(nats_url: str, database_url: str) -> AsyncIterator[Harness]:
    running = Harness(nats_url, database_url)
    await running.start()
    await running.ticker("0.09")
    try:
        yield running
    finally:
        await running.stop()
        if running.nc is not None:
            await running.nc.close()


async def test_a_redelivered_approval_makes_exactly_one_exchange_order(harness: Harness) -> None:
    first = approval(1)
    await harness.approve(first)
    await until(final(harness, "c-1", "filled"), what="the order filled")
    # The same approval again, past JetStream's duplicate detection (another message id).
    await harness.approve(first, msg_id="d-1-again")
    await harness.approve(first, msg_id="d-1-third")
    await asyncio.sleep(0.5)
    assert len(harness.exchange_orders()) == 1
    assert await harness.statuses("c-1") == ["submitted", "filled"]
    (filled,) = [e for e in await harness.events("c-1") if e["status"] == "filled"]
    # A quote-sized buy: Coinbase-style fills in quote, converted to base exactly.
    assert Decimal(filled["filled_size"]) == Decimal("0.11111111")
    assert filled["fills"][0]["liquidity"] == "taker"
    # Every event says why the order was asked: its intent's reason (issue 22: the ledger books it).
    assert [e["intent_reason"] for e in await harness.events("c-1")] == ["SIGNAL", "SIGNAL"]


async def test_a_timeout_after_placing_is_unknown_and_asked_again_not_failed(
    harness: Harness,
) -> None:
    harness.exchange.queued_faults.append("timeout_after_place")
    await harness.approve(approval(2))
    statuses = await until(final(harness, "c-2", "filled"), what="the order found and filled")
    assert "failed" not in statuses
    assert len(harness.exchange_orders()) == 1


@pytest.mark.parametrize(
    "storm",
    [
        ["rate_limit"] * 3 + ["server_error"] * 2,  # within one call's retries
        ["server_error"] * 12,  # past them: unknown, polled again until it goes through
    ],
)
async def test_a_storm_of_429s_and_5xxs_ends_with_the_right_final_status(
    harness: Harness, storm: list[str]
) -> None:
    harness.exchange.queued_faults.extend(storm)
    await harness.approve(approval(3))
    statuses = await until(final(harness, "c-3", "filled"), timeout=20, what="filled")
    assert statuses == ["submitted", "filled"]
    assert len(harness.exchange_orders()) == 1
    assert not harness.exchange.queued_faults


async def test_a_storm_before_an_exchange_reject_ends_failed_with_the_reason(
    harness: Harness,
) -> None:
    harness.exchange.queued_faults.extend(["rate_limit", "server_error", "reject"])
    await harness.approve(approval(4))
    await until(final(harness, "c-4", "failed"), what="failed")
    (failed,) = [e for e in await harness.events("c-4") if e["status"] == "failed"]
    assert failed["reason"]["code"] == "INJECTED_REJECT"


async def test_a_partly_filled_limit_order_times_out_is_cancelled_and_keeps_its_fills(
    nats_url: str, database_url: str
) -> None:
    harness = Harness(
        nats_url, database_url, mock_partial_fill_ratio=Decimal("0.5"), limit_order_ttl_s=1
    )
    await harness.start()
    try:
        await harness.ticker("0.09")
        limit = approval(
            5, order_type="limit", limit_price=Decimal("0.085"), quote_size=None,
            base_size=Decimal("0.2"),
        )  # fmt: skip
        await harness.approve(limit)
        await until(final(harness, "c-5", "open"), what="resting")
        await harness.ticker("0.084")  # crosses: half fills, as maker at the limit
        await until(final(harness, "c-5", "partially_filled"), what="a partial fill")
        statuses = await until(final(harness, "c-5", "cancelled"), what="cancelled by its ttl")
        assert statuses == ["submitted", "open", "partially_filled", "cancelled"]
        events = await harness.events("c-5")
        partial, cancelled = events[2], events[3]
        assert [f["size"] for f in partial["fills"]] == ["0.1"]
        assert partial["fills"][0]["liquidity"] == "maker"
        assert partial["fills"][0]["price"] == "0.085"
        assert cancelled["reason"]["code"] == "LIMIT_TTL" and cancelled["filled_size"] == "0.1"
        assert harness.exchange_orders()[0].status == "CANCELLED"
    finally:
        await harness.stop()
        await harness.nc.close()


async def test_a_halt_cancels_the_open_orders_it_covers_and_reports_each(harness: Harness) -> None:
    for n in (6, 7):
        await harness.approve(
            approval(
                n, order_type="limit", limit_price=Decimal("0.08"), quote_size=None,
                base_size=Decimal("0.2"),
            )
        )  # fmt: skip
    for cid in ("c-6", "c-7"):
        await until(final(harness, cid, "open"), what=f"{cid} resting")
    await asyncio.sleep(0.3)  # the safety consumer exists (it only takes new halts)
    await harness.halt(BOT)
    for cid in ("c-6", "c-7"):
        await until(final(harness, cid, "cancelled"), what=f"{cid} cancelled by the halt")
        (cancelled,) = [e for e in await harness.events(cid) if e["status"] == "cancelled"]
        assert cancelled["reason"]["code"] == "HALT"
        assert "kill switch" in cancelled["reason"]["message"]


async def resting_limit(harness: Harness, n: int) -> None:
    """Approval ``n``: a limit buy resting on the mock exchange (``c-<n>`` open), once the
    executor's safety-event consumer exists (it takes new events only)."""
    await harness.approve(
        approval(
            n, order_type="limit", limit_price=Decimal("0.08"), quote_size=None,
            base_size=Decimal("0.2"),
        )
    )  # fmt: skip
    await until(final(harness, f"c-{n}", "open"), what=f"c-{n} resting")
    await asyncio.sleep(0.3)


async def test_a_limit_reached_event_sets_no_state_and_cancels_nothing(harness: Harness) -> None:
    """Safety tells of most rejections with a stateless event (LIMIT_REACHED): the bot's resting
    order stays, and no trading state is recorded for it."""
    await resting_limit(harness, 8)
    await harness.halt(BOT, n=1, state=None, code="LIMIT_REACHED")
    await harness.halt("another-bot", n=2)  # handled after the first: the consumer is ordered
    await until(lambda: harness.trading_state("another-bot") == "halted", what="barrier")
    assert harness.trading_state(BOT) is None
    assert "cancelled" not in await harness.statuses("c-8")
    order = harness.order("c-8")
    assert order is not None and order.status == "open"


async def test_a_restart_resumes_every_open_order_and_adopts_ours_it_did_not_know(
    nats_url: str, database_url: str
) -> None:
    harness = Harness(nats_url, database_url)
    await harness.start()
    try:
        await harness.ticker("0.09")
        for n in (8, 9):
            await harness.approve(
                approval(
                    n, order_type="limit", limit_price=Decimal("0.08"), quote_size=None,
                    base_size=Decimal("0.2"),
                )
            )  # fmt: skip
            await until(final(harness, f"c-{n}", "open"), what="resting")
        await harness.stop()
        # While the executor is down: one of ours appears on the exchange that it never knew
        # (a store restored from an older backup, say).
        engine = make_engine(database_url)
        quote = Quote(Decimal("0.09"), MARKET[0])
        offline = MockExchange(engine, load_catalog().products, None, lambda _p: quote)
        offline.place(
            OrderRequest(
                "tranche-lost-1", "ETH-BTC", "buy", "limit", None, Decimal("0.2"), Decimal("0.08")
            )
        )
        engine.dispose()
        await harness.start()
        await until(final(harness, "lost-1", "open"), what="the unknown order adopted")
        (adopted,) = [e for e in await harness.events("lost-1") if e["status"] == "submitted"]
        assert adopted["reason"]["code"] == "ADOPTED" and adopted["bot_id"] == BOT
        await harness.ticker("0.079")  # every resting order fills
        for cid in ("c-8", "c-9", "lost-1"):
            await until(final(harness, cid, "filled"), what=f"{cid} filled after the restart")
        assert len(harness.exchange_orders()) == 3
    finally:
        await harness.stop()
        await harness.nc.close()


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"mode": "production"}, "MODE_MISMATCH"),
        ({"decided_at": datetime(2018, 1, 20, tzinfo=UTC)}, "APPROVAL_EXPIRED"),
        ({"quote_size": Decimal("0.00001")}, "BELOW_MIN_NOTIONAL"),
        ({"product_id": "BTC-USD", "quote_size": Decimal("100")}, "NO_MARKET_PRICE"),
    ],
)
async def test_approvals_the_executor_will_not_place_fail_with_a_reason(
    harness: Harness, kw: dict, code: str
) -> None:
    await harness.approve(approval(10, **kw))
    await until(final(harness, "c-10", "failed"), what="refused")
    (failed,) = [e for e in await harness.events("c-10") if e["status"] == "failed"]
    assert failed["reason"]["code"] == code
    assert failed["intent_reason"] == "SIGNAL"
    assert harness.exchange_orders() == [] or code == "NO_MARKET_PRICE"
    # The reason is on the record, not only in the event and the log (issue 17, item 7).
    (listed,) = [o for o in await harness.get("/orders") if o["client_order_id"] == "c-10"]
    one = await harness.get("/orders/c-10")
    for shown in (listed, one):
        assert shown["reason"]["code"] == code and shown["reason"]["message"]


async def test_a_halt_of_an_order_the_exchange_never_confirmed_cancels_it_without_placing(
    harness: Harness,
) -> None:
    harness.exchange.queued_faults.extend(["server_error"] * 10_000)  # the exchange is down
    await harness.approve(approval(11))
    await until(lambda: (o := harness.order("c-11")) and o.last_error, what="placing failed")
    assert harness.order("c-11").status == "new"  # unknown, not failed
    await asyncio.sleep(0.3)  # the safety consumer exists (it only takes new halts)
    await harness.halt(None, n=11)
    await until(lambda: (o := harness.order("c-11")) and o.cancel_code == "HALT", what="halted")
    harness.exchange.queued_faults.clear()  # the exchange is back: it never had the order
    await until(final(harness, "c-11", "cancelled"), what="cancelled without placing")
    assert await harness.statuses("c-11") == ["cancelled"]
    (cancelled,) = await harness.events("c-11")
    assert cancelled["intent_reason"] == "SIGNAL" and cancelled["reason"]["code"] == "HALT"
    assert harness.exchange_orders() == []


async def test_fill_at_intent_fills_at_the_intent_price_and_stamps_every_event_with_its_time(
    nats_url: str, database_url: str
) -> None:
    harness = Harness(nats_url, database_url, mock_fill_at="intent")
    await harness.start()
    try:
        await harness.ticker("0.09")  # the latest price: what fill_at=latest would take
        at = MARKET[0] - timedelta(minutes=30)
        await harness.approve(
            approval(12, reference_price=Decimal("0.08"), market_time=at, time=at)
        )
        await until(final(harness, "c-12", "filled"), what="filled")
        submitted, filled = await harness.events("c-12")
        assert filled["fills"][0]["price"] == "0.08" and filled["filled_size"] == "0.125"
        assert {submitted["time"], filled["time"], filled["fills"][0]["time"]} == {
            at.isoformat().replace("+00:00", "Z")
        }
        with Session(harness.service.engine) as session:  # type: ignore[union-attr]
            pricing = pricing_of(session, "c-12")
        assert pricing is not None and pricing.reference_price == Decimal("0.08")
    finally:
        await harness.stop()
        await harness.nc.close()


# -- defence in depth: only what safety signed counts (issue 14) -------------------------------


async def dead_letters(harness: Harness, code: str) -> list[dict]:
    js = harness.nc.jetstream()
    info = await js.stream_info("TRANCHE_DLQ")
    found = []
    for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
        letter = json.loads((await js.get_msg("TRANCHE_DLQ", seq)).data)
        if letter["service"] == "executor" and code in [r["code"] for r in letter["reasons"]]:
            found.append(letter)
    return found


async def test_an_unsigned_or_wrongly_signed_approval_is_dead_lettered_never_placed(
    harness: Harness,
) -> None:
    await harness.approve(approval(20), sign=False)
    forged = approval(21)
    subject = f"tranche.orders.approved.{BOT}"
    payload = forged.model_dump_json().encode()
    other_key = Signer(new_key_pair()[0])  # a key that is not safety's
    await harness.nc.jetstream().publish(
        subject, payload, headers=other_key.headers(subject, payload), stream=ORDERS.name
    )
    # Safety's signature over another payload does not cover this one.
    tampered = approval(22)
    signature = signed(subject, approval(23).model_dump_json().encode())
    await harness.nc.jetstream().publish(
        subject, tampered.model_dump_json().encode(), headers=signature, stream=ORDERS.name
    )

    async def three():
        found = await dead_letters(harness, "APPROVAL_NOT_SIGNED")
        return found if len(found) >= 3 else None

    letters = await until(three, what="three dead letters")
    assert {json.loads(x["payload"])["client_order_id"] for x in letters} == {
        "c-20",
        "c-21",
        "c-22",
    }
    await harness.approve(approval(24))  # what safety signed still trades
    await until(final(harness, "c-24", "filled"), what="the signed approval filled")
    assert [o.client_order_id for o in harness.exchange_orders()] == ["tranche-c-24"]
    for n in (20, 21, 22):
        assert await harness.events(f"c-{n}") == []


async def test_an_approval_on_another_bots_subject_is_dead_lettered_never_placed(
    harness: Harness,
) -> None:
    """Signed by safety, but for this bot on another bot's subject: refused on the subject's
    token (the handler reads it from the message it takes from FastStream's context)."""
    subject = "tranche.orders.approved.another-bot"
    payload = approval(34).model_dump_json().encode()
    await harness.nc.jetstream().publish(
        subject, payload, headers=signed(subject, payload), stream=ORDERS.name
    )
    letters = await until(lambda: dead_letters(harness, "SUBJECT_MISMATCH"), what="dead letter")
    assert [json.loads(x["payload"])["client_order_id"] for x in letters] == ["c-34"]
    await harness.approve(approval(35))  # the same approval on its own subject trades
    await until(final(harness, "c-35", "filled"), what="c-35 filled")
    assert [o.client_order_id for o in harness.exchange_orders()] == ["tranche-c-35"]
    assert await harness.events("c-34") == []


async def test_every_order_event_carries_the_executors_own_signature(harness: Harness) -> None:
    await harness.approve(approval(27))
    await until(final(harness, "c-27", "filled"), what="c-27 filled")
    js = harness.nc.jetstream()
    info = await js.stream_info(ORDERS.name)
    stored = [await js.get_msg(ORDERS.name, seq) for seq in range(1, info.state.last_seq + 1)]
    events = [m for m in stored if m.subject == f"tranche.orders.events.{BOT}"]
    assert [json.loads(m.data)["status"] for m in events] == ["submitted", "filled"]
    executors, safetys = Verifier(ORDER_PUBLIC_KEY), Verifier(PUBLIC_KEY)
    assert all(executors.valid(m.subject, m.data, m.headers) for m in events)
    assert not any(safetys.valid(m.subject, m.data, m.headers) for m in events)  # its own key


def test_the_executor_does_not_start_without_its_own_signing_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TRANCHE_ORDER_SIGNING_KEY")
    harness = Harness("nats://127.0.0.1:1", f"sqlite:///{tmp_path / 'e.db'}")
    with pytest.raises(SystemExit, match=r"executor: TRANCHE_ORDER_SIGNING_KEY .* not set"):
        build(harness.settings_for())
    garbage = harness.settings_for().model_copy(update={"order_signing_key": SecretStr("nope")})
    with pytest.raises(SystemExit, match="TRANCHE_ORDER_SIGNING_KEY is not an unencrypted PEM"):
        build(garbage)


async def test_an_unsigned_halt_cancels_nothing(harness: Harness) -> None:
    await resting_limit(harness, 25)
    await harness.halt(BOT, n=25, sign=False)  # the ledger's (or anyone's) fake halt
    await until(lambda: dead_letters(harness, "SAFETY_EVENT_NOT_SIGNED"), what="dead letter")
    await asyncio.sleep(0.5)
    assert await harness.statuses("c-25") == ["submitted", "open"]
    await harness.approve(approval(26))  # and it did not stop placing either
    await until(final(harness, "c-26", "filled"), what="c-26 filled")


async def test_the_last_step_refuses_placing_while_halted_and_entries_while_reducing(
    harness: Harness,
) -> None:
    await asyncio.sleep(0.3)  # the safety consumer exists (it only takes new halts)
    await harness.halt(BOT, n=30)
    await until(lambda: harness.trading_state(BOT) == "halted", what="the halt recorded")
    await harness.approve(approval(30))  # an approval safety made before the halt, say
    await until(final(harness, "c-30", "failed"), what="refused at the last step")
    (failed,) = await harness.events("c-30")
    assert failed["reason"]["code"] == "TRADING_HALTED"
    await harness.halt(BOT, n=31, state="reducing")
    await until(lambda: harness.trading_state(BOT) == "reducing", what="reducing recorded")
    await harness.approve(approval(31))
    await until(final(harness, "c-31", "failed"), what="an entry refused while reducing")
    assert (await harness.events("c-31"))[0]["reason"]["code"] == "TRADING_REDUCING"
    await harness.halt(None, n=32, state="active")  # the system is active: the bot still reduces
    await harness.approve(approval(32, action="exit", side="sell", quote_size=None,
                                   base_size=Decimal("0.1")))  # fmt: skip
    await until(final(harness, "c-32", "filled"), what="an exit placed while reducing")
    await harness.halt(BOT, n=33, state="active")
    await until(lambda: harness.trading_state(BOT) == "active", what="resumed")
    await harness.approve(approval(33))
    await until(final(harness, "c-33", "filled"), what="an entry placed once active")
    assert [o.client_order_id for o in harness.exchange_orders()] == [
        "tranche-c-32",
        "tranche-c-33",
    ]
