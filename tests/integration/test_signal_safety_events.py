"""The signal service and safety's flatten requests, on a real NATS server: a flatten asked while
the signal service is down is carried out when it is back (it heard safety's events as plain
messages, and such a flatten was never done), and a signed flatten delivered again (a week
later, after the bot bought again) sells nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import nats
from sqlmodel import Session, create_engine, select

from services.signal.store import FlattenRecord, SafetyEventSeen
from shared import subjects
from shared.contracts import SafetyCommand, SafetyCommandResult, SafetyEvent, Ticker
from shared.money import utc_now
from shared.streams import SAFETY, SIGNAL_SAFETY_EVENTS, ensure_streams
from tests.integration import test_safety_service as safety_side
from tests.integration.test_signal_bots import (
    _position_is,
    intents_of,
    put_open_position,
    running,
    settings_for,
)
from tests.support.signing import signed
from tests.support.waiting import eventually

BOT = "from-file"


async def sells(nc: nats.NATS) -> list:
    """The bot's sell intents, after a tick at the newest price (standing exits act on ticks)."""
    tick = Ticker(product_id="ETH-BTC", price=Decimal("0.05"), time=utc_now())
    await nc.publish("tranche.market.ticker.ETH-BTC", tick.model_dump_json().encode())
    return [i for i in await intents_of(nc.jetstream(), BOT) if i.side == "sell"]


async def test_a_flatten_asked_while_the_signal_service_is_down_is_done_when_it_is_back(
    tmp_path: Path, nats_url: str
) -> None:
    nc = await nats.connect(nats_url)
    await ensure_streams(nc.jetstream())
    (signal_dir := tmp_path / "signal").mkdir()
    (safety_dir := tmp_path / "safety").mkdir()
    safety = await safety_side.started(
        safety_side.settings_for(f"sqlite:///{safety_dir / 'safety.db'}", nats_url, safety_dir)
    )
    settings = settings_for(signal_dir, nats_url)
    try:
        await put_open_position(nc.jetstream(), BOT)
        async with running(settings):  # it ran before: its consumer exists
            await asyncio.sleep(0.5)
        command = SafetyCommand(
            command="flatten", command_id="flatten-1", bot_id=BOT, operator="alice",
            reason="get out",
        )  # fmt: skip
        reply = await nc.request(
            subjects.SAFETY_CONTROL, command.model_dump_json().encode(), timeout=10
        )
        answer = SafetyCommandResult.model_validate_json(reply.data)
        assert (answer.ok, answer.code) == (True, "FLATTEN_REQUESTED")  # the operator is told
        async with running(settings):  # back after the flatten was asked
            found = await eventually(lambda: sells(nc), "the exit the flatten asks", timeout=20)
            assert found[0].reason.code == "FLATTEN"
    finally:
        await safety_side.stop(safety)
        await nc.close()


async def test_a_signed_flatten_delivered_again_sells_nothing(
    tmp_path: Path, nats_url: str
) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    settings = settings_for(tmp_path, nats_url)
    try:
        await put_open_position(js, BOT)
        async with running(settings) as (_, web):
            await eventually(lambda: _position_is(web, BOT, "open"), "the open position")
            event = SafetyEvent(
                message_id="safety-flatten-from-file-cmd-1", correlation_id="cmd-1",
                time=utc_now() - timedelta(days=7), code="FLATTEN_REQUESTED",
                message="exit the whole position of bot from-file", bot_id=BOT,
                state="reducing", caused_by="alice (flatten)",
            )  # fmt: skip
            payload = event.model_dump_json().encode()
            # Safety's signature covers the subject and the payload, not the headers.
            await js.publish(subjects.SAFETY_EVENTS, payload, headers=signed(
                subjects.SAFETY_EVENTS, payload, {"Nats-Msg-Id": event.message_id}
            ))  # fmt: skip
            (first,) = await eventually(lambda: sells(nc), "the flatten's sell")
            assert first.reason.code == "FLATTEN"
            await put_open_position(js, BOT, status="flat", sequence=2)  # sold: the flatten ends
            await eventually(lambda: _position_is(web, BOT, "flat"), "flat")
            await put_open_position(js, BOT, sequence=3)  # the bot bought again
            await eventually(lambda: _position_is(web, BOT, "open"), "the new position")
            again = await js.publish(  # the same signed bytes, a new message to the stream
                subjects.SAFETY_EVENTS, payload, headers=signed(subjects.SAFETY_EVENTS, payload)
            )

            async def handled() -> bool:
                info = await js.consumer_info(SAFETY.name, SIGNAL_SAFETY_EVENTS.durable)
                return info.ack_floor.stream_seq >= again.seq

            await eventually(handled, "the signal's consumer past the message sent again")
        engine = create_engine(settings.database_url)
        with Session(engine) as session:
            assert session.exec(select(FlattenRecord)).all() == []  # no flatten stands
            (seen,) = session.exec(select(SafetyEventSeen)).all()
            assert (seen.event_id, seen.code) == (event.message_id, "FLATTEN_REQUESTED")
        engine.dispose()
        assert [i.reason.code for i in await intents_of(js, BOT) if i.side == "sell"] == ["FLATTEN"]
    finally:
        await nc.close()
