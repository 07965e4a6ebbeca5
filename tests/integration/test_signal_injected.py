"""Injected signals on the real signal service and a real NATS server: an injected signal acts
in market time and its id lives in a namespace of its own.

* Its time: one injected as the README shows it (no time) while the market data is a replay of
  2018 data took the stream's receive time (the wall clock), and a frozen one (temperature 0,
  trading nothing) dated days ahead took its own: either became the bot's confirmation clock,
  and the strategy, saying buy on every later candle, never confirmed again, silently.
* Its id: a frozen injected buy given the id the service gives a position's stop on the exchange
  (``stop:<bot>:<position>:<n>``, predictable) claimed it: the stop was marked asked, never sent.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared import subjects
from shared.money import utc_now
from tests.integration import test_signal_bots
from tests.integration.test_signal_bots import (
    evaluations,
    intents_of,
    put_open_position,
    running,
    settings_for,
)
from tests.support.catalogs import ETH_BTC
from tests.support.waiting import eventually

nats_js = test_signal_bots.js
"""A JetStream context on the test's NATS server (the fixture of test_signal_bots)."""

MOMENTUM = (
    ETH_BTC
    + """
[bots.mo]
product_id = "ETH-BTC"
quote_size = "0.01"
confirm_evaluations = 2
confirm_seconds = 60
signals = [{ name = "momentum", params = { lookback = 1, full_pct = "0.1" } }]
"""
)

REPLAYED = datetime(2018, 1, 20, tzinfo=UTC)


def price(minute: int) -> str:
    return str((0.1 * (1 + 0.002 * minute)).__round__(8))


async def ticks(js, queue: asyncio.Queue, t0: datetime, minutes: range) -> list[dict]:
    """One rising tick a minute; each closes a candle; returns the evaluations they made."""
    for minute in minutes:
        body = {"product_id": "ETH-BTC", "price": price(minute),
                "time": (t0 + timedelta(minutes=minute)).isoformat()}  # fmt: skip
        await js._nc.publish("tranche.market.ticker.ETH-BTC", json.dumps(body).encode())
    await js._nc.flush()
    expected = len(minutes) if minutes.start > 0 else len(minutes) - 1
    return [await asyncio.wait_for(queue.get(), 10) for _ in range(expected)]


async def inject(js, queue: asyncio.Queue, body: dict) -> dict | str:
    """The injection's evaluation, or the code it was dead-lettered with."""
    subject = subjects.for_token(subjects.SIGNALS_INJECT, "mo")
    sent = await js.publish(subject, json.dumps(body).encode(), headers={"Nats-Msg-Id": "inj-1"})
    letters = await js._nc.subscribe(subjects.for_token(subjects.DLQ, "signal"))
    evaluated = asyncio.ensure_future(queue.get())
    refused = asyncio.ensure_future(letters.next_msg(timeout=10))
    done, pending = await asyncio.wait({evaluated, refused}, timeout=10,
                                       return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    for task in pending:
        task.cancel()
    await letters.unsubscribe()
    assert done, f"the injection (stream sequence {sent.seq}) was neither evaluated nor refused"
    if evaluated in done:
        return evaluated.result()
    return json.loads(refused.result().data)["reasons"][0]["code"]


async def run(tmp_path: Path, nats_url: str, js, t0: datetime, body: dict | None) -> tuple:
    (tmp_path / "bots.toml").write_text(MOMENTUM)
    async with running(settings_for(tmp_path, nats_url)) as _:
        queue = await evaluations(js._nc, "mo")
        before = await ticks(js, queue, t0, range(0, 7))
        injected = await inject(js, queue, body) if body is not None else None
        after = await ticks(js, queue, t0, range(7, 17))
        await asyncio.sleep(1.0)  # the outbox relay
        intents = await intents_of(js, "mo")
    cut = f"candle:mo:{(t0 + timedelta(minutes=7)).isoformat()}"
    later = [i for i in intents if i.signal_id.startswith("candle:") and i.signal_id > cut]
    return before, injected, after, later


async def test_as_a_control_the_strategy_confirms_every_second_candle(
    tmp_path: Path, nats_url: str, nats_js
) -> None:
    _, _, after, later = await run(tmp_path, nats_url, nats_js, REPLAYED, None)
    assert [e["direction"] for e in after] == ["buy"] * 10
    assert len(later) >= 4


async def test_an_injected_signal_during_a_replay_acts_in_market_time(
    tmp_path: Path, nats_url: str, nats_js
) -> None:
    body = {"side": "buy", "temperature": 80, "confirmed": True}  # README, "Injecting a signal"
    _, injected, after, later = await run(tmp_path, nats_url, nats_js, REPLAYED, body)
    assert isinstance(injected, dict), injected
    # Stamped with the newest price's time (the last tick, minute 6), not the wall clock.
    at = datetime.fromisoformat(injected["time"].replace("Z", "+00:00"))
    assert at == REPLAYED + timedelta(minutes=6), injected["time"]
    assert [e["direction"] for e in after] == ["buy"] * 10, "the strategy says buy throughout"
    assert len(later) >= 4, (
        f"10 more rising candles, all buy, made {len(later)} intent(s): after one injected "
        f"signal the confirmation runs since {after[-1]['confirming_since']} (the injection's "
        f"wall-clock time) while the candles are at {after[-1]['time']}; "
        f"confirmations {[e['confirmations'] for e in after]}"
    )


async def test_an_injection_dated_days_ahead_is_refused_and_mutes_nothing(
    tmp_path: Path, nats_url: str, nats_js
) -> None:
    t0 = utc_now().replace(microsecond=0) - timedelta(hours=1)
    ahead = (utc_now() + timedelta(days=6)).isoformat()
    body = {"side": "buy", "temperature": 0, "time": ahead}  # frozen: trades nothing itself
    _, injected, after, later = await run(tmp_path, nats_url, nats_js, t0, body)
    assert injected == "EVENT_TIME_JUMP"  # refused, as a tick dated so far ahead would be
    assert [e["direction"] for e in after] == ["buy"] * 10, "the strategy says buy throughout"
    assert len(later) >= 4, (
        f"10 more rising candles, all buy, made {len(later)} intent(s): one frozen injected "
        f"signal dated {ahead} became the confirmation clock "
        f"(confirming since {after[-1]['confirming_since']}, candles at {after[-1]['time']})"
    )


GUARDED = (
    ETH_BTC
    + """
[bots.guard]
product_id = "ETH-BTC"
quote_size = "0.01"
confirm_evaluations = 1
confirm_seconds = 0
stop_loss_pct = "2"
stop_on_exchange = true
"""
)

STOP_ID = "stop:guard:guard-mock-1:1"
NOW = utc_now().replace(microsecond=0) - timedelta(minutes=5)


async def scenario(tmp_path: Path, nats_url: str, js, claim: bool) -> tuple[list, list]:
    (tmp_path / "bots.toml").write_text(GUARDED)
    async with running(settings_for(tmp_path, nats_url)) as (_, web):
        if claim:
            seen = await evaluations(js._nc, "guard")
            body = {"side": "buy", "temperature": 0, "message_id": STOP_ID}
            await js.publish(subjects.for_token(subjects.SIGNALS_INJECT, "guard"),
                             json.dumps(body).encode())  # fmt: skip
            # Acted on in a namespace of its own (CONFIRMED, TOO_COLD, no intent).
            evaluated = await asyncio.wait_for(seen.get(), 10)
            assert evaluated["intent_id"] is None
        tick = {"product_id": "ETH-BTC", "price": "0.05", "time": NOW.isoformat()}
        await js._nc.publish("tranche.market.ticker.ETH-BTC", json.dumps(tick).encode())
        await js._nc.flush()
        await put_open_position(js, "guard", position_id="guard-mock-1", at=NOW)

        async def stop_view():
            views = (await web.get("/stops")).json()
            return views if views and views[0].get("reason") else None

        views = await eventually(stop_view, "the signal's view of the position's stop")
        for minute in range(1, 4):  # later ticks: the stop would be asked again if it could be
            later = tick | {"time": (NOW + timedelta(minutes=minute)).isoformat()}
            await js._nc.publish("tranche.market.ticker.ETH-BTC", json.dumps(later).encode())
        await js._nc.flush()
        try:
            intents = await eventually(lambda: intents_of(js, "guard"), "the stop", timeout=6)
        except AssertionError:
            intents = []
        views = (await web.get("/stops")).json()
    return intents, views


async def test_as_a_control_the_open_position_gets_its_stop_on_the_exchange(
    tmp_path: Path, nats_url: str, nats_js
) -> None:
    intents, views = await scenario(tmp_path, nats_url, nats_js, claim=False)
    assert [(i.intent_id, i.order_type) for i in intents] == [(STOP_ID, "stop_limit")]
    assert views[0]["intent_id"] == STOP_ID


async def test_an_injected_message_id_cannot_suppress_the_stop(
    tmp_path: Path, nats_url: str, nats_js
) -> None:
    intents, views = await scenario(tmp_path, nats_url, nats_js, claim=True)
    assert [(i.intent_id, i.order_type) for i in intents] == [(STOP_ID, "stop_limit")], (
        f"no stop intent was ever sent for the open position, yet GET /stops says: {views}"
    )
