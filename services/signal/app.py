"""Signal service wiring.

Reads:  tranche.signals.inject.<bot>   (durable, consumer signal-inject-v1)
        tranche.market.ticker.<product> (core NATS)
        tranche_positions bucket        (watch)
Writes: tranche.intents.<bot>           (outbox)
        tranche.signals.evaluated.<bot> (core NATS)
        tranche.market.ticker.<product> (when it replays recorded data)
        tranche.dlq.signal              (refused input)
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal

from faststream.nats.annotations import NatsMessage
from prometheus_client import Counter
from sqlmodel import Session

from services.signal.config import SignalSettings
from services.signal.feeds.replay import ReplayError, parse_replay_spec, read_ticks, replay
from services.signal.intents import Market, decide_intent
from services.signal.momentum import Momentum
from services.signal.store import SignalRecord, already_handled, record
from services.signal.temperature import band_of
from shared import subjects
from shared.bus import InvalidMessage, delivery_of, durable
from shared.catalog import CatalogError, load_catalog
from shared.contracts import (
    InjectedSignal,
    PositionUpdate,
    Reason,
    Side,
    SignalEvaluation,
    Ticker,
    TradeIntent,
)
from shared.logging import correlated
from shared.money import utc_now
from shared.service import Service, bootstrap
from shared.settings import load
from shared.streams import SIGNAL_INJECT

INTENTS = Counter("tranche_signal_intents_total", "Intents created", ["action", "band"])
NO_INTENT = Counter("tranche_signal_no_intent_total", "Signals that made no intent", ["code"])


def build(settings: SignalSettings) -> Service:
    service = Service(settings, [SignalRecord])
    log = service.log
    try:
        catalog = load_catalog(settings.config_file)
        replays = parse_replay_spec(settings.replay)
    except (CatalogError, ReplayError) as error:
        raise SystemExit(f"signal: {error}") from None
    markets: dict[str, Market] = {}
    positions: dict[str, PositionUpdate] = {}
    momentum = {
        bot_id: Momentum(bot.lookback, bot.threshold_pct)
        for bot_id, bot in catalog.bots.items()
        if bot.strategy == "momentum"
    }
    last_direction: dict[str, Side | None] = {}

    async def act(
        bot_id: str, side: Side, temperature: Decimal, signal_id: str, time: datetime, source: str
    ) -> TradeIntent | None:
        bot = catalog.bots[bot_id]
        outcome = decide_intent(
            bot_id=bot_id,
            bot=bot,
            side=side,
            temperature=temperature,
            signal_id=signal_id,
            signal_time=time,
            source=source,
            position=positions.get(bot_id),
            market=markets.get(bot.product_id),
        )
        intent = outcome if isinstance(outcome, TradeIntent) else None
        reason = outcome.reason if intent else outcome

        def change(session: Session) -> TradeIntent | None:
            if already_handled(session, signal_id):
                return None
            entry = SignalRecord(
                signal_id=signal_id,
                bot_id=bot_id,
                side=side,
                time=time,
                intent_id=intent.intent_id if intent else None,
                outcome_code=reason.code,
                outcome=reason.message,
            )
            record(session, entry, intent)
            return intent

        staged = await service.transact(change)
        with correlated(intent.intent_id if intent else signal_id, bot_id=bot_id):
            if staged is not None:
                INTENTS.labels(staged.action, staged.band).inc()
                log.info("intent.created", action=staged.action, side=side, band=staged.band)
            elif intent is None:
                NO_INTENT.labels(reason.code).inc()
                log.info("signal.no_intent", code=reason.code, reason=reason.message)
        return staged

    @durable(service.router, SIGNAL_INJECT, title="signal-inject")
    async def on_inject(body: InjectedSignal, msg: NatsMessage) -> None:
        delivery = delivery_of(msg)
        bot_id = subjects.last_token(delivery.subject)
        if bot_id not in catalog.bots:
            raise InvalidMessage(
                Reason(code="UNKNOWN_BOT", message=f"no bot named {bot_id!r} is configured")
            )
        if body.confirmed and settings.mode == "production":
            raise InvalidMessage(
                Reason(
                    code="CONFIRMED_IN_PRODUCTION", message="confirmed=true is for mock mode only"
                )
            )
        signal_id = body.message_id or f"inject-{delivery.stream_sequence}"
        time = body.time or delivery.stream_time or utc_now()
        temperature = (
            body.temperature
            if body.temperature is not None
            else catalog.bots[bot_id].inject_temperature
        )
        with correlated(body.correlation_id or signal_id, bot_id=bot_id):
            log.info("signal.injected", side=body.side, temperature=str(temperature))
        await act(bot_id, body.side, temperature, signal_id, time, body.source)

    @service.router.subscriber(subjects.all_of(subjects.MARKET_TICKER), title="signal-ticker")
    async def on_ticker(body: Ticker) -> None:
        known = markets.get(body.product_id)
        if known is not None and body.time < known.time:
            return  # an older tick never replaces a newer price
        markets[body.product_id] = Market(price=body.price, time=body.time)
        for bot_id, bot in catalog.bots.items():
            if bot.product_id != body.product_id or bot_id not in momentum:
                continue
            reading = momentum[bot_id].update(body.price)
            if reading is None:
                continue
            # Edge-triggered: a direction signals once when it appears, not on every tick.
            fresh = reading.direction is not None and reading.direction != last_direction.get(
                bot_id
            )
            last_direction[bot_id] = reading.direction
            intent = None
            if fresh and reading.direction is not None:
                signal_id = f"momentum:{bot_id}:{body.time.isoformat()}"
                intent = await act(
                    bot_id, reading.direction, reading.temperature, signal_id, body.time, "momentum"
                )
            await publish_evaluation(bot_id, body, reading.direction, reading.temperature, intent)

    async def publish_evaluation(
        bot_id: str,
        tick: Ticker,
        direction: Side | None,
        temperature: Decimal,
        intent: TradeIntent | None,
    ) -> None:
        evaluation = SignalEvaluation(
            bot_id=bot_id,
            product_id=tick.product_id,
            time=tick.time,
            direction=direction or "hold",
            temperature=temperature,
            band=band_of(temperature),
            confirmations=1 if direction else 0,
            confirmations_needed=1,
            intent_id=intent.intent_id if intent else None,
            reason=Reason(
                code="MOMENTUM", message=f"momentum {direction or 'hold'} at {tick.price}"
            ),
        )
        assert service.nc is not None
        await service.nc.publish(
            subjects.for_token(subjects.SIGNALS_EVALUATED, bot_id),
            evaluation.model_dump_json().encode(),
        )

    async def watch_positions() -> None:
        assert service.nc is not None
        bucket = await service.nc.jetstream().key_value(subjects.POSITIONS_BUCKET)
        watcher = await bucket.watchall()
        async for entry in watcher:
            if entry is None or entry.value is None or entry.operation is not None:
                continue
            try:
                position = PositionUpdate.model_validate_json(entry.value)
            except ValueError as error:
                log.warning("position.unreadable", key=entry.key, error=str(error))
                continue
            positions[position.bot_id] = position

    async def publish_ticker(tick: Ticker) -> None:
        assert service.nc is not None
        await service.nc.publish(
            subjects.for_token(subjects.MARKET_TICKER, tick.product_id),
            tick.model_dump_json().encode(),
        )

    async def run_replays() -> None:
        async def one(product_id: str, path) -> None:
            count = await replay(
                read_ticks(path, product_id), publish_ticker, settings.replay_speed
            )
            log.info("replay.finished", product_id=product_id, ticks=count)

        await asyncio.gather(*(one(product, path) for product, path in replays))

    service.publishes("tranche.intents.{bot_id}", TradeIntent, "A trade intent (outbox).")
    service.publishes(
        "tranche.signals.evaluated.{bot_id}", SignalEvaluation, "Every evaluation (core NATS)."
    )
    service.publishes(
        "tranche.market.ticker.{product_id}", Ticker, "Replayed market data (core NATS)."
    )
    service.background.append(watch_positions)
    if replays:
        service.background.append(run_replays)
    return service


def main() -> None:
    settings = load(SignalSettings)
    bootstrap(settings)
    build(settings).run()
