"""The safety service against a real NATS server, on SQLite and on PostgreSQL: durable limits
across a restart, two instances on one durable consumer, order events, the positions bucket,
breakers, the kill switch and fail-closed storage."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import nats
import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine
from sqlmodel import Session, select

from services.safety.app import build
from services.safety.config import SafetySettings
from services.safety.store import DecisionRow
from shared import subjects
from shared.bots import BotRecord
from shared.catalog import Bot
from shared.contracts import (
    BotReadiness,
    Fill,
    OrderApproved,
    OrderEvent,
    PositionUpdate,
    Reason,
    SafetyCommand,
    SafetyCommandResult,
    TradeIntent,
    TrancheCapBreach,
    TrancheView,
)
from shared.money import utc_now
from shared.service import Service
from shared.signing import Verifier
from shared.streams import SAFETY_INTENTS, SAFETY_ORDER_EVENTS, Consumer, ensure_streams
from tests.support import signing
from tests.support.waiting import eventually as wait_until

T0 = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)
_ids = itertools.count()


def intent(
    bot: str,
    at: datetime = T0,
    action: str = "entry",
    size: str = "0.01",
    intent_id: str | None = None,
) -> TradeIntent:
    iid = intent_id or f"i-{bot}-{next(_ids)}"
    side = "sell" if action == "exit" else "buy"
    sizes = {"base_size": Decimal(size)} if action == "exit" else {"quote_size": Decimal(size)}
    return TradeIntent(
        message_id=iid, correlation_id=iid, time=at, intent_id=iid, signal_id=f"s-{iid}",
        bot_id=bot, product_id="ETH-BTC", action=action, side=side, temperature=Decimal(80),
        band="hot", reason=Reason(code="SIGNAL", message="test"),
        reference_price=Decimal("0.09"), market_time=at, **sizes,
    )  # fmt: skip


def settings_for(database_url: str, nats_url: str, tmp_path: Path, **overrides) -> SafetySettings:
    base = {
        "database_url": database_url,
        "nats_url": nats_url,
        "data_dir": tmp_path,
        "outbox_poll_s": 0.2,
        "entry_cooldown_s": 0,
        "exit_cooldown_s": 0,
        "control_token": "s3cret-token",
    }
    return SafetySettings(**(base | overrides))


class Harness:
    """One NATS connection for the test's own publishing and reading."""

    def __init__(self, nats_url: str, database_url: str):
        self.nats_url, self.database_url = nats_url, database_url
        self.nc: nats.NATS | None = None
        self.engine = create_engine(
            database_url.replace("postgresql://", "postgresql+psycopg://"), pool_pre_ping=True
        )

    async def __aenter__(self) -> Harness:
        self.nc = await nats.connect(self.nats_url)
        self.js = self.nc.jetstream()
        await ensure_streams(self.js)
        return self

    async def __aexit__(self, *_) -> None:
        await self.nc.close()
        self.engine.dispose()

    async def send(self, message: TradeIntent, msg_id: str | None = None) -> None:
        await self.js.publish(
            subjects.for_token(subjects.INTENTS, message.bot_id),
            message.model_dump_json().encode(),
            headers={"Nats-Msg-Id": msg_id or message.message_id},
        )

    async def order_event(
        self, approval: OrderApproved, status: str, fills=(), at=None, reason: Reason | None = None
    ) -> None:
        intent_ = approval.intent
        event = OrderEvent(
            message_id=f"order-{approval.client_order_id}-{status}",
            correlation_id=intent_.intent_id, time=at or intent_.market_time,
            bot_id=intent_.bot_id, product_id=intent_.product_id, mode=approval.mode,
            intent_id=intent_.intent_id, client_order_id=approval.client_order_id,
            action=intent_.action, side=intent_.side, status=status, fills=list(fills),
            filled_size=sum((f.size for f in fills), Decimal(0)), reason=reason,
        )  # fmt: skip
        subject = subjects.for_token(subjects.ORDERS_EVENTS, intent_.bot_id)
        payload = event.model_dump_json().encode()
        await self.js.publish(  # as the executor publishes it: signed with its key
            subject,
            payload,
            headers=signing.signed_by_executor(subject, payload, {"Nats-Msg-Id": event.message_id}),
        )

    async def put_position(
        self, bot: str, sequence: int, quantity: str, cost: str, realized_total: str = "0"
    ) -> None:
        kv = await self.js.key_value(subjects.POSITIONS_BUCKET)
        tranches = (
            [
                TrancheView(
                    index=1, client_order_id="c", entry_price=Decimal("0.09"),
                    size=Decimal(quantity), remaining_size=Decimal(quantity), fees=Decimal(0),
                    realized_pnl=Decimal(0),
                )
            ]
            if Decimal(quantity) > 0
            else []
        )  # fmt: skip
        position = PositionUpdate(
            message_id=f"p-{bot}-{sequence}", correlation_id="c", time=T0, bot_id=bot,
            product_id="ETH-BTC", mode="mock", position_id="p" if tranches else None,
            status="open" if tranches else "flat", quantity=Decimal(quantity),
            average_entry_price=Decimal("0.09") if tranches else None,
            break_even_price=Decimal("0.09") if tranches else None, cost_basis=Decimal(cost),
            realized_pnl=Decimal(0), fees_paid=Decimal(0), tranches=tranches, sequence=sequence,
            realized_pnl_total=Decimal(realized_total),
        )  # fmt: skip
        await kv.put(bot, position.model_dump_json().encode())

    async def add_bot(self, bot_id: str) -> None:
        """Put a bot in the tranche_bots bucket, as the signal service does for every bot."""
        record = BotRecord(
            bot_id=bot_id, config=Bot(product_id="ETH-BTC", quote_size=Decimal("0.01")),
            change="created", changed_at=T0, changed_by="test",
        )  # fmt: skip
        bucket = await self.js.key_value(subjects.BOTS_BUCKET)
        await bucket.put(bot_id, record.model_dump_json().encode())

    def decisions(self, bot: str | None = None) -> list[DecisionRow]:
        with Session(self.engine) as session:
            query = select(DecisionRow)
            if bot:
                query = query.where(DecisionRow.bot_id == bot)
            return list(session.exec(query.order_by(DecisionRow.market_time)))

    async def decided(self, count: int, bot: str | None = None, timeout: float = 30):
        def probe():
            found = self.decisions(bot)
            return found if len(found) >= count else None

        return await wait_until(probe, f"{count} decisions", timeout)

    async def stream(self, stream: str, subject_prefix: str) -> list:
        info = await self.js.stream_info(stream)
        found = []
        for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
            try:
                message = await self.js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError:
                continue
            if message.subject.startswith(subject_prefix):
                found.append(message)
        return found

    async def approvals(self, bot: str) -> list[OrderApproved]:
        found = await self.stream("TRANCHE_ORDERS", f"tranche.orders.approved.{bot}")
        return [OrderApproved.model_validate_json(m.data) for m in found]

    async def approvals_at_least(self, bot: str, count: int) -> list[OrderApproved]:
        async def probe():
            found = await self.approvals(bot)
            return found if len(found) >= count else None

        return await wait_until(probe, what=f"{count} approvals of {bot}")

    async def command(self, **fields) -> SafetyCommandResult:
        body = SafetyCommand(command_id=f"cmd-{next(_ids)}", operator="test", **fields)
        reply = await self.nc.request(
            subjects.SAFETY_CONTROL, body.model_dump_json().encode(), timeout=10
        )
        return SafetyCommandResult.model_validate_json(reply.data)


async def started(settings: SafetySettings) -> Service:
    service = build(settings)
    await service.start()
    return service


async def stop(service: Service) -> None:
    """``service.stop()``, after making sure its background tasks really ended: on Python 3.11
    ``asyncio.wait_for`` can swallow a cancellation that races a completed wait (fixed in 3.12),
    and the outbox relay's loop waits with it while this test wakes it hundreds of times."""
    for _ in range(100):
        pending = [task for task in service._tasks if not task.done()]
        if not pending:
            break
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
    service._tasks.clear()
    await service.stop()


# -- two instances, one durable consumer: never past a limit between them ---------------------


async def test_two_instances_never_approve_past_a_limit_between_them(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    """40 bots, 5 intents each, from two instances at once. One order in flight per bot (no
    executor here, so nothing becomes final) and 15 entries an hour across all bots: exactly one
    approval for 15 bots, none for the others, whatever the interleaving."""
    settings = settings_for(
        database_url, nats_url, tmp_path, max_entries_all_hour=15, max_open_positions=100
    )
    first, second = await started(settings), await started(settings)
    try:
        async with Harness(nats_url, database_url) as h:
            bots = [f"race-{n}" for n in range(40)]
            for round_ in range(5):
                await asyncio.gather(
                    *(h.send(intent(bot, T0 + timedelta(seconds=round_))) for bot in bots)
                )
            rows = await h.decided(200, timeout=120)
            approved = [r for r in rows if r.approved]
            per_bot = {bot: sum(1 for r in approved if r.bot_id == bot) for bot in bots}
            assert max(per_bot.values()) == 1
            assert len(approved) == 15
            codes = {json.loads(r.reasons)[0]["code"] for r in rows if not r.approved}
            assert codes <= {"ORDER_IN_FLIGHT", "ALL_ENTRIES_PER_HOUR"}
            assert len(await h.stream("TRANCHE_ORDERS", "tranche.orders.approved.")) == 15
    finally:
        await stop(first)
        await stop(second)


async def test_two_instances_keep_per_bot_counters_with_orders_filling(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    """A fake executor finishes every approval at once, so bots trade again: 3 entries an hour
    per bot and 10 across all, while two instances decide 90 intents concurrently."""
    settings = settings_for(
        database_url, nats_url, tmp_path, max_entries_per_bot_hour=3, max_entries_all_hour=10
    )
    first, second = await started(settings), await started(settings)
    try:
        async with Harness(nats_url, database_url) as h:

            async def executor(msg) -> None:
                approval = OrderApproved.model_validate_json(msg.data)
                await h.order_event(approval, "cancelled")

            sub = await h.nc.subscribe("tranche.orders.approved.>", cb=executor)
            bots = [f"busy-{n}" for n in range(6)]
            for round_ in range(15):
                for bot in bots:
                    await h.send(intent(bot, T0 + timedelta(seconds=round_)))
                await asyncio.sleep(0.02)
            rows = await h.decided(90, timeout=120)
            await sub.unsubscribe()
            approved = [r for r in rows if r.approved]
            assert len(approved) <= 10
            assert all(sum(1 for r in approved if r.bot_id == bot) <= 3 for bot in bots)
            assert len(approved) >= 2  # orders did finish and bots traded again
    finally:
        await stop(first)
        await stop(second)


# -- durable: a restart in the middle of a stream resets nothing -------------------------------


async def test_a_restart_in_the_middle_of_the_stream_resets_no_limit(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, nats_url, tmp_path, max_entries_all_hour=6)
    async with Harness(nats_url, database_url) as h:
        service = await started(settings)
        for n in range(4):
            await h.send(intent(f"restart-{n}"))
        await h.decided(4)
        await stop(service)
        service = await started(settings)
        try:
            for n in range(4, 10):
                await h.send(intent(f"restart-{n}", T0 + timedelta(minutes=10)))
            rows = await h.decided(10)
            assert sum(r.approved for r in rows) == 6
            later = [r for r in rows if not r.approved]
            assert {json.loads(r.reasons)[0]["code"] for r in later} == {"ALL_ENTRIES_PER_HOUR"}
            # The rejection shows the counters it saw.
            assert json.loads(later[0].counters)["all_entries_hour"] == "6"
        finally:
            await stop(service)


# -- an intent's time is the decision's "now": never adopted far ahead -----------------------


def production(database_url: str, nats_url: str, tmp_path: Path, **overrides) -> SafetySettings:
    return settings_for(
        database_url, nats_url, tmp_path, mode="production", live_trading_confirmed=True,
        max_market_age_s=0, **overrides,
    )  # fmt: skip


async def outcome(h: Harness, sent: TradeIntent) -> DecisionRow | str:
    """The decision stored for the intent, or the code it was dead-lettered with."""

    async def probe():
        row = next((r for r in h.decisions() if r.intent_id == sent.intent_id), None)
        if row is not None:
            return row
        for letter in await h.stream("TRANCHE_DLQ", "tranche.dlq.safety"):
            if sent.intent_id in letter.data.decode():
                return json.loads(letter.data)["reasons"][0]["code"]
        return None

    return await wait_until(probe, f"safety's outcome for {sent.intent_id}")


async def test_an_intent_dated_far_ahead_is_refused_and_wedges_nothing(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    """Holding the signal's credentials (or with a bug), one entry dated 400 days ahead was
    approved and every honest entry after it refused for 576,000 minutes of cooldown; entries
    dated a day apart each passed a limit of one a day. It is dead-lettered now, as a tick is."""
    settings = production(database_url, nats_url, tmp_path, entry_cooldown_s=300)
    service = await started(settings)
    try:
        async with Harness(nats_url, database_url) as h:
            bot, now = "wedged", utc_now()
            first = intent(bot, now - timedelta(minutes=30))
            await h.send(first)
            (approval,) = await h.approvals_at_least(bot, 1)
            await h.order_event(approval, "cancelled", at=now - timedelta(minutes=29))
            for ahead in (timedelta(days=400), timedelta(days=1), timedelta(minutes=6)):
                hostile = intent(bot, now + ahead)
                await h.send(hostile)
                assert await outcome(h, hostile) == "EVENT_TIME_AHEAD"
            honest = intent(bot, now - timedelta(minutes=20))  # 10 min after the first entry
            await h.send(honest)
            row = await outcome(h, honest)
            assert isinstance(row, DecisionRow) and row.approved, row
    finally:
        await stop(service)


async def test_an_intent_dated_past_a_breakers_reset_time_does_not_reset_it(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    """ORDER_FAILURES tripped (reducing for 24 h of event time); one exit intent dated a day
    ahead reset it at once and forgave the failures, and the next honest entry was approved."""
    service = await started(production(database_url, nats_url, tmp_path))
    try:
        async with Harness(nats_url, database_url) as h:
            bot, base = "tripped", utc_now() - timedelta(hours=1)
            for n in range(3):
                sent = intent(bot, base + timedelta(minutes=n))
                await h.send(sent)
                found = await h.approvals_at_least(bot, n + 1)
                mine = next(a for a in found if a.intent.intent_id == sent.intent_id)
                await h.order_event(mine, "failed", at=base + timedelta(minutes=n, seconds=30))
            hostile = intent(bot, utc_now() + timedelta(days=1, hours=1), action="exit")
            await h.send(hostile)
            assert await outcome(h, hostile) == "EVENT_TIME_AHEAD"
            honest = intent(bot, base + timedelta(minutes=10))
            await h.send(honest)
            row = await outcome(h, honest)
            assert isinstance(row, DecisionRow) and not row.approved
            assert [r["code"] for r in json.loads(row.reasons)] == ["REDUCING"]
    finally:
        await stop(service)


async def test_a_market_buy_sized_in_base_at_a_made_up_price_is_refused(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    """Holding the signal's credentials: 1,000 ETH "at 0.00000001" was approved under an order
    cap of 1, and the executor would have bought 1,000 ETH at market."""
    caps = {"max_order_notional": Decimal(1), "max_position_notional": Decimal(1)}
    service = await started(production(database_url, nats_url, tmp_path, **caps))
    try:
        async with Harness(nats_url, database_url) as h:
            honest = intent("big", utc_now())
            made_up = {"reference_price": Decimal("0.00000001")}
            sized = {"quote_size": None, "base_size": Decimal(1000)}
            sent = TradeIntent.model_validate(honest.model_dump() | sized | made_up)
            await h.send(sent)
            row = await outcome(h, sent)
            assert isinstance(row, DecisionRow) and not row.approved
            assert [r["code"] for r in json.loads(row.reasons)] == ["BUY_SIZED_IN_BASE"]
            assert await h.approvals("big") == []
    finally:
        await stop(service)


async def test_a_redelivered_intent_gets_the_same_decision_not_a_second_approval(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    service = await started(settings_for(database_url, nats_url, tmp_path))
    try:
        async with Harness(nats_url, database_url) as h:
            once = intent("again", intent_id="same-intent")
            await h.send(once)
            await h.send(once, msg_id="a-republish-past-the-duplicate-window")
            await h.send(intent("again", T0 + timedelta(seconds=1)))  # a marker behind them
            await h.decided(2, "again")
            await asyncio.sleep(0.5)
            approvals = await h.approvals("again")
            assert [a.intent.intent_id for a in approvals] == ["same-intent"]
            assert approvals[0].counters["bot_entries_hour"] == "0"
    finally:
        await stop(service)


async def test_storage_down_means_no_approval_until_it_is_back(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    service = await started(settings_for(database_url, nats_url, tmp_path))
    working = service.engine
    service.engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/nothing")
    try:
        async with Harness(nats_url, database_url) as h:
            await h.send(intent("fragile"))
            await asyncio.sleep(1.5)
            assert await h.approvals("fragile") == []
            service.engine = working  # storage is back: the retried intent is decided once
            (row,) = await h.decided(1, "fragile")
            assert row.approved
    finally:
        service.engine = working
        await stop(service)


async def test_storage_that_stays_down_rejects_with_a_reason(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    service = await started(settings_for(database_url, nats_url, tmp_path, storage_attempts=1))
    working = service.engine
    service.engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/nothing")
    try:
        async with Harness(nats_url, database_url) as h:
            await h.send(intent("no-storage"))

            async def rejected():
                return await h.stream("TRANCHE_ORDERS", "tranche.orders.rejected.no-storage")

            (message,) = await wait_until(rejected, what="a rejection")
            assert json.loads(message.data)["reasons"][0]["code"] == "STORAGE_UNAVAILABLE"
            assert await h.approvals("no-storage") == []
    finally:
        service.engine = working
        await stop(service)


# -- order events and positions -----------------------------------------------------------------


async def test_cooldown_counts_from_the_fill_and_a_stale_position_fails_closed(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(
        database_url, nats_url, tmp_path, entry_cooldown_s=300, positions_wait_s=0.5
    )
    service = await started(settings)
    try:
        async with Harness(nats_url, database_url) as h:
            bot = "filler"
            await h.send(intent(bot))
            (approval,) = await wait_until(lambda: h.approvals(bot), what="approval")
            # Filled three minutes after the approval (event time).
            fill = Fill(
                trade_id="t-1", price=Decimal("0.09"), size=Decimal("0.1"), fee=Decimal(0),
                time=T0 + timedelta(minutes=3),
            )  # fmt: skip
            await h.order_event(approval, "filled", [fill], at=fill.time)
            await asyncio.sleep(0.5)
            # Six minutes after the approval, three after the fill: the ledger has not booked
            # the fill yet (no position) and the cooldown runs from the fill.
            await h.send(intent(bot, T0 + timedelta(minutes=6), action="add"))
            rows = await h.decided(2, bot)
            assert [r["code"] for r in json.loads(rows[1].reasons)] == ["POSITION_UNKNOWN"]
            await h.put_position(bot, sequence=1, quantity="0.1", cost="0.009")
            await asyncio.sleep(0.5)
            await h.send(intent(bot, T0 + timedelta(minutes=7), action="add"))
            rows = await h.decided(3, bot)
            assert [r["code"] for r in json.loads(rows[2].reasons)] == ["ENTRY_COOLDOWN"]
            # An exit larger than the position is cut to it.
            await h.send(intent(bot, T0 + timedelta(minutes=8), action="exit", size="5"))
            rows = await h.decided(4, bot)
            assert rows[3].approved and rows[3].base_size == Decimal("0.1")
            await h.send(intent(bot, T0 + timedelta(minutes=9), action="add"))
            rows = await h.decided(5, bot)
            assert [r["code"] for r in json.loads(rows[4].reasons)] == ["ORDER_IN_FLIGHT"]
    finally:
        await stop(service)


async def test_a_position_a_moment_behind_a_fill_is_waited_for_not_rejected(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, nats_url, tmp_path, positions_wait_s=30)
    service = await started(settings)
    try:
        async with Harness(nats_url, database_url) as h:
            bot = "quick"
            await h.send(intent(bot))
            (approval,) = await wait_until(lambda: h.approvals(bot), what="approval")
            fill = Fill(
                trade_id="t-1", price=Decimal("0.09"), size=Decimal("0.1"), fee=Decimal(0),
                time=T0,
            )  # fmt: skip
            await h.order_event(approval, "filled", [fill])

            async def consumed(consumer: Consumer, acked: bool) -> bool:
                info = await h.js.consumer_info(consumer.stream.name, consumer.durable)
                return info.num_pending == 0 and (info.num_ack_pending == 0) == acked

            await wait_until(lambda: consumed(SAFETY_ORDER_EVENTS, True), what="fill recorded")
            # The next intent arrives before the ledger's position with that fill: safety holds
            # it (delivered, not acknowledged) instead of rejecting it as position unknown ...
            await h.send(intent(bot, T0 + timedelta(minutes=1), action="add"))
            await wait_until(lambda: consumed(SAFETY_INTENTS, False), what="the intent held")
            assert len(h.decisions(bot)) == 1
            # ... and decides it once the position comes.
            await h.put_position(bot, sequence=1, quantity="0.1", cost="0.009")
            rows = await h.decided(2, bot)
            assert rows[1].approved, rows[1].reasons
    finally:
        await stop(service)


async def test_losing_exits_trip_the_breaker_and_an_operator_resumes(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, nats_url, tmp_path, losing_exits_in_a_row=2)
    service = await started(settings)
    try:
        async with Harness(nats_url, database_url) as h:
            bot = "loser"
            await h.put_position(bot, sequence=0, quantity="1", cost="0.1")
            await asyncio.sleep(0.3)
            for n in range(2):
                at = T0 + timedelta(minutes=n)
                await h.send(intent(bot, at, action="exit", size="0.1"))
                await h.decided(n + 1, bot)
                approval = (await h.approvals_at_least(bot, n + 1))[n]
                fill = Fill(trade_id=f"x-{n}", price=Decimal("0.08"), size=Decimal("0.1"),
                            fee=Decimal(0), time=at)  # fmt: skip
                await h.order_event(approval, "filled", [fill])
                left = str(Decimal("0.9") - n * Decimal("0.1"))
                # The ledger's figure (say FIFO from a dearer tranche), not the average cost's
                # -0.002: safety counts what the ledger booked.
                total = str(Decimal("-0.003") * (n + 1))
                await h.put_position(
                    bot, sequence=n + 1, quantity=left, cost="0.09", realized_total=total
                )
                await asyncio.sleep(0.5)  # the order event and the position reach safety
            events = await wait_until(
                lambda: h.stream("TRANCHE_SAFETY", subjects.SAFETY_EVENTS), what="a safety event"
            )
            trip = json.loads(events[-1].data)
            assert trip["code"] == "LOSING_STREAK" and trip["state"] == "reducing"
            assert trip["bot_id"] == bot
            with Session(h.engine) as session:
                rows = session.exec(select(DecisionRow)).all()
                losses = [r.realized_pnl for r in rows if r.realized_pnl is not None]
            assert losses == [Decimal("-0.003"), Decimal("-0.003")]
            await asyncio.sleep(0.3)
            await h.send(intent(bot, T0 + timedelta(minutes=5)))
            rows = await h.decided(3, bot)
            assert [r["code"] for r in json.loads(rows[2].reasons)] == ["REDUCING"]
            result = await h.command(command="resume", bot_id=bot)
            assert result.ok and result.state == "active"
            await h.send(intent(bot, T0 + timedelta(minutes=6)))
            rows = await h.decided(4, bot)
            assert rows[3].approved
    finally:
        await stop(service)


# -- kill switch, mode, limits reset ------------------------------------------------------------


async def test_the_kill_switch_over_http_needs_the_token_and_over_nats_halts_everything(
    database_url: str, nats_url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    service = await started(settings_for(database_url, nats_url, tmp_path))
    app = service.http_app()
    try:
        async with (
            Harness(nats_url, database_url) as h,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as web,
        ):
            assert (await web.post("/halt", json={})).status_code == 401
            wrong = {"Authorization": "Bearer nope"}
            assert (await web.post("/halt", json={}, headers=wrong)).status_code == 401
            good = {"Authorization": "Bearer s3cret-token"}
            await h.add_bot("k-1")
            answer = await web.post("/halt", json={"bot_id": "k-1"}, headers=good)
            assert answer.status_code == 200 and answer.json()["state"] == "halted"
            await h.send(intent("k-1", action="entry"))
            rows = await h.decided(1, "k-1")
            assert [r["code"] for r in json.loads(rows[0].reasons)] == ["HALTED"]
            assert (await web.post("/resume", json={"bot_id": "k-1"}, headers=good)).json()[
                "state"
            ] == "active"
            stops = {"bot_id": "k-1", "cancel_stops": True}  # the dashboard's "and cancel stops"
            answer = await web.post("/halt", json=stops, headers=good)
            assert answer.status_code == 200 and answer.json()["code"] == "HALT_CANCEL_STOPS"
            assert (await web.post("/resume", json={"bot_id": "k-1"}, headers=good)).json()[
                "state"
            ] == "active"

            halted = await h.command(command="halt", reason="exchange incident")
            assert halted.ok and halted.state == "halted"
            await h.send(intent("k-2", T0 + timedelta(minutes=1)))
            rows = await h.decided(1, "k-2")
            assert "exchange incident" in json.loads(rows[0].reasons)[0]["message"]
            assert (await h.command(command="resume")).state == "active"

            async def six_events():
                found = await h.stream("TRANCHE_SAFETY", "tranche.")
                return found if len(found) >= 6 else None

            events = [json.loads(m.data) for m in await wait_until(six_events, what="events")]
            assert [e["code"] for e in events] == [
                "HALT", "RESUME", "HALT_CANCEL_STOPS", "RESUME", "HALT", "RESUME",
            ]  # fmt: skip
            listed = (await web.get("/decisions", params={"bot": "k-1"})).json()
            assert listed[0]["reasons"][0]["code"] == "HALTED" and "counters" in listed[0]
    finally:
        await stop(service)
    out, err = capfd.readouterr()
    assert "s3cret-token" not in out + err


async def test_mode_switch_and_per_mode_counters(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(
        database_url,
        nats_url,
        tmp_path,
        max_entries_per_bot_hour=1,
        max_market_age_s=0,  # the test's prices are from 2018: no wall-clock staleness here
        coinbase_api_key="k",
        coinbase_api_secret="s",
        live_trading_confirmed=True,
    )
    service = await started(settings)
    try:
        async with Harness(nats_url, database_url) as h:
            bot = "moder"
            first = intent(bot)
            await h.send(first)
            await h.decided(1, bot)
            approvals = await h.approvals_at_least(bot, 1)
            await h.order_event(approvals[0], "cancelled")
            await asyncio.sleep(0.3)
            await h.send(intent(bot, T0 + timedelta(minutes=1)))
            rows = await h.decided(2, bot)
            assert [r["code"] for r in json.loads(rows[1].reasons)] == ["BOT_ENTRIES_PER_HOUR"]
            # The reset works in mock ...
            assert (await h.command(command="limits_reset", bot_id=bot)).ok
            await h.send(intent(bot, T0 + timedelta(minutes=2)))
            rows = await h.decided(3, bot)
            assert rows[2].approved and rows[2].mode == "mock"
            approvals = await h.approvals_at_least(bot, 2)
            await h.order_event(approvals[1], "cancelled")
            # ... production has its own counters, and refuses a reset.
            assert (await h.command(command="mode", mode="production")).mode == "production"
            refused = await h.command(command="limits_reset", bot_id=bot)
            assert not refused.ok and refused.code == "PRODUCTION_LIMITS_KEPT"
            await asyncio.sleep(0.3)
            await h.send(intent(bot, T0 + timedelta(minutes=3)))
            rows = await h.decided(4, bot)
            assert rows[3].approved and rows[3].mode == "production"
            assert (await h.command(command="mode", mode="mock")).mode == "mock"
            await h.send(intent(bot, T0 + timedelta(minutes=4)))
            rows = await h.decided(5, bot)
            assert rows[4].mode == "mock"
            assert "ORDER_IN_FLIGHT" in rows[4].reasons  # the production order is not final
    finally:
        await stop(service)


async def test_production_is_refused_without_the_executors_opt_in(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    service = await started(settings_for(database_url, nats_url, tmp_path))
    try:
        async with Harness(nats_url, database_url) as h:
            refused = await h.command(command="mode", mode="production")
            assert not refused.ok and "TRANCHE_LIVE_TRADING_CONFIRMED" in refused.message
            assert refused.mode == "mock"
    finally:
        await stop(service)


# -- readiness: could each bot trade now, and why not -----------------------------------------


async def test_readiness_follows_decisions_fills_and_halts(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, nats_url, tmp_path, entry_cooldown_s=300)
    service = await started(settings)
    app = service.http_app()
    heard: list[BotReadiness] = []
    try:
        async with (
            Harness(nats_url, database_url) as h,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as web,
        ):

            async def on_readiness(msg) -> None:
                heard.append(BotReadiness.model_validate_json(msg.data))

            await h.nc.subscribe("tranche.safety.readiness.>", cb=on_readiness)

            async def latest(predicate, what: str) -> BotReadiness:
                def probe():
                    mine = [r for r in heard if r.bot_id == "ready-1"]
                    return mine[-1] if mine and predicate(mine[-1]) else None

                return await wait_until(probe, what=what)

            bot = "ready-1"
            await h.send(intent(bot))
            (approval,) = await wait_until(lambda: h.approvals(bot), what="approval")
            busy = await latest(lambda r: not r.can_enter, "readiness after the approval")
            assert {b.code for b in busy.entry_blocks} >= {"ORDER_IN_FLIGHT", "ENTRY_COOLDOWN"}
            assert busy.entry_cooldown_until == T0 + timedelta(minutes=5)
            assert busy.time == T0 and busy.product_id == "ETH-BTC"

            fill = Fill(
                trade_id="t-r", price=Decimal("0.09"), size=Decimal("0.1"), fee=Decimal(0),
                time=T0 + timedelta(minutes=1),
            )  # fmt: skip
            await h.order_event(approval, "filled", [fill], at=fill.time)
            await h.put_position(bot, sequence=1, quantity="0.1", cost="0.009")
            cooling = await latest(
                lambda r: [b.code for b in r.entry_blocks] == ["ENTRY_COOLDOWN"] and r.can_exit,
                "only the cooldown left, and an exit allowed",
            )
            # The cooldown runs from the fill, in event time.
            assert cooling.entry_cooldown_until == fill.time + timedelta(minutes=5)
            assert cooling.tranches == 1 and cooling.orders_in_flight == 0

            await h.command(command="halt", bot_id=bot, reason="desk review")
            halted = await latest(lambda r: r.trading_state == "halted", "halted readiness")
            assert "desk review" in next(
                b.message for b in halted.exit_blocks if b.code == "HALTED"
            )
            served = (await web.get(f"/readiness/{bot}")).json()
            assert served["trading_state"] == "halted" and served["can_exit"] is False
            assert [r["bot_id"] for r in (await web.get("/readiness")).json()] == [bot]
            assert (await web.get("/readiness/nobody")).status_code == 404
    finally:
        await stop(service)


async def test_an_order_the_exchange_lost_blocks_only_its_bot_with_that_reason(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    service = await started(settings_for(database_url, nats_url, tmp_path))
    heard: list[BotReadiness] = []
    try:
        async with Harness(nats_url, database_url) as h:

            async def on_readiness(msg) -> None:
                heard.append(BotReadiness.model_validate_json(msg.data))

            await h.nc.subscribe("tranche.safety.readiness.>", cb=on_readiness)
            lost_bot, calm_bot = "lost-1", "calm-1"
            await h.send(intent(lost_bot))
            (approval,) = await wait_until(lambda: h.approvals(lost_bot), what="approval")
            lost = approval.client_order_id
            why = Reason(code="ORDER_UNKNOWN_AT_EXCHANGE", message="404 past the grace period")
            await h.order_event(approval, "unknown_at_exchange", at=T0 + timedelta(minutes=1),
                                reason=why)  # fmt: skip

            def blocked(r: BotReadiness) -> bool:
                return r.bot_id == lost_bot and any(
                    b.code == "ORDER_UNKNOWN_AT_EXCHANGE" for b in r.entry_blocks
                )

            ready = await wait_until(
                lambda: next((r for r in reversed(heard) if blocked(r)), None),
                what="readiness naming the lost order",
            )
            assert ready.exit_blocks[0].code == "ORDER_UNKNOWN_AT_EXCHANGE"
            assert f"tranche orders resolve {lost}" in ready.entry_blocks[0].message

            await h.send(intent(lost_bot, T0 + timedelta(minutes=2), action="add"))
            await h.send(intent(calm_bot, T0 + timedelta(minutes=2)))
            rows = await h.decided(2, lost_bot)
            reasons = json.loads(rows[1].reasons)
            assert [r["code"] for r in reasons] == ["ORDER_UNKNOWN_AT_EXCHANGE"]
            assert f"tranche orders resolve {lost}" in reasons[0]["message"]
            (calm,) = await h.decided(1, calm_bot)
            assert calm.approved, "another bot is not blocked by the lost order"

            # Settled by hand (`tranche orders resolve ... --as cancelled`): the block lifts.
            await h.order_event(approval, "cancelled", at=T0 + timedelta(minutes=3))
            await asyncio.sleep(0.5)
            await h.send(intent(lost_bot, T0 + timedelta(minutes=4)))
            rows = await h.decided(3, lost_bot)
            assert rows[2].approved, rows[2].reasons
    finally:
        await stop(service)


# -- commands that cannot be carried out get an answer with the reason (issue 14, item 11) ------


async def test_a_malformed_command_gets_an_answer_with_the_reason(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    service = await started(settings_for(database_url, nats_url, tmp_path))
    try:
        async with Harness(nats_url, database_url) as h:
            for payload in (b"not json", b'{"command": "explode", "command_id": "c"}', b"{}"):
                reply = await h.nc.request(subjects.SAFETY_CONTROL, payload, timeout=3)
                answer = SafetyCommandResult.model_validate_json(reply.data)
                assert not answer.ok and answer.code == "INVALID_COMMAND", payload
                assert answer.message, payload
    finally:
        await stop(service)


async def test_halts_and_limit_resets_for_a_bot_that_does_not_exist_are_refused(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    service = await started(settings_for(database_url, nats_url, tmp_path))
    try:
        async with Harness(nats_url, database_url) as h:
            for command in ("halt", "limits_reset"):
                refused = await h.command(command=command, bot_id="no-such-bot")
                assert not refused.ok and refused.code == "UNKNOWN_BOT", command
                assert "no-such-bot" in refused.message
            await h.add_bot("known-1")  # in the bots bucket: a bot that exists
            assert (await h.command(command="halt", bot_id="known-1")).state == "halted"
            assert (await h.command(command="limits_reset", bot_id="known-1")).ok
            await h.send(intent("traded-1"))  # never in the bucket, but safety decided for it
            await h.decided(1, "traded-1")
            assert (await h.command(command="halt", bot_id="traded-1")).state == "halted"
            states = {s["scope"] for s in (await safety_states(service))["states"]}
            assert "no-such-bot" not in states
    finally:
        await stop(service)


def service_readiness(service: Service) -> set[str]:
    """The bots safety has published a readiness for (what GET /readiness lists)."""
    return set(service.readiness.latest)  # type: ignore[attr-defined]


async def safety_states(service: Service, path: str = "/states") -> dict:
    transport = httpx.ASGITransport(app=service.http_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://s") as web:
        return (await web.get(path)).json()


async def test_the_ledgers_breach_report_becomes_one_safety_event_of_safetys(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    service = await started(settings_for(database_url, nats_url, tmp_path))
    try:
        async with Harness(nats_url, database_url) as h:
            breach = TrancheCapBreach(
                message_id="breach-mock-b-1-1-4", correlation_id="c", time=T0, bot_id="b-1",
                mode="mock", position_number=1, tranches=4, max_tranches=3,
                message="bot b-1 holds 4 entry tranches in position 1; the cap is 3.",
            )  # fmt: skip
            for _ in range(2):  # a redelivery or a re-publish is reported once
                await h.js.publish(
                    "tranche.ledger.breaches.b-1", breach.model_dump_json().encode(),
                    headers={"Nats-Msg-Id": f"{breach.message_id}-{_}"},
                )  # fmt: skip

            async def reported():
                found = await h.stream("TRANCHE_SAFETY", subjects.SAFETY_EVENTS)
                return found or None

            (event,) = [json.loads(m.data) for m in await wait_until(reported, what="event")]
            await asyncio.sleep(0.5)
            assert len(await h.stream("TRANCHE_SAFETY", subjects.SAFETY_EVENTS)) == 1
            assert event["code"] == "TRANCHE_CAP_BREACHED" and event["bot_id"] == "b-1"
            assert (
                event["caused_by"].startswith("ledger") and "4 entry tranches" in event["message"]
            )
    finally:
        await stop(service)


async def test_safety_signs_its_approvals_events_and_answers(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    verifier = Verifier(signing.PUBLIC_KEY)
    service = await started(settings_for(database_url, nats_url, tmp_path))
    try:
        async with Harness(nats_url, database_url) as h:
            await h.send(intent("signed-1"))
            (approved,) = await wait_until(
                lambda: h.stream("TRANCHE_ORDERS", "tranche.orders.approved.signed-1"),
                what="an approval",
            )
            assert verifier.valid(approved.subject, approved.data, approved.headers)
            assert not verifier.valid(
                "tranche.orders.approved.other", approved.data, approved.headers
            )
            await h.add_bot("signed-2")
            reply = await h.nc.request(
                subjects.SAFETY_CONTROL,
                SafetyCommand(command="halt", command_id="c-s", bot_id="signed-2").model_dump_json()
                .encode(),
                timeout=5,
            )  # fmt: skip
            assert verifier.valid(reply.subject, reply.data, reply.headers)
            (halt,) = await wait_until(
                lambda: h.stream("TRANCHE_SAFETY", subjects.SAFETY_EVENTS), what="the halt event"
            )
            assert verifier.valid(halt.subject, halt.data, halt.headers)
    finally:
        await stop(service)


def test_safety_does_not_start_without_its_signing_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRANCHE_SIGNING_KEY")
    settings = settings_for(f"sqlite:///{tmp_path / 's.db'}", "nats://127.0.0.1:1", tmp_path)
    with pytest.raises(SystemExit, match="TRANCHE_SIGNING_KEY"):
        build(settings)
    garbage = settings.model_copy(update={"signing_key": SecretStr("not a key")})
    with pytest.raises(SystemExit, match="not an unencrypted PEM private key"):
        build(garbage)
