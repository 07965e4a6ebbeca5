"""Signal service wiring.

Reads:  tranche.signals.inject.<bot>   (durable, consumer signal-inject-v2)
        tranche.market.ticker.<product> (core NATS)
        tranche_positions bucket        (watch)
        tranche.orders.approved|rejected|events.<bot>  (lock-step replay only: ordered
                                        consumers, and safety's consumer's progress, to know
                                        when an intent has settled; services/signal/lockstep.py)
        tranche_bots bucket             (watch: bots created, changed, paused, removed)
        tranche.safety.readiness.<bot>  (core NATS: a bot's orders in flight, so its product
                                        cannot change under them)
Writes: tranche.intents.<bot>           (outbox)
        tranche_bots bucket             (seeded from the bots file; changed over HTTP /bots)
        tranche.bots.changed            (outbox: every change of a bot)
        tranche.signals.evaluated.<bot> (core NATS)
        tranche.market.ticker.<product> (when it replays recorded data or runs a random walk)
        tranche.dlq.signal              (refused input)
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from time import monotonic
from typing import Literal

from fastapi import APIRouter
from faststream.nats.annotations import NatsMessage
from prometheus_client import Counter, Gauge
from sqlmodel import Session

from services.signal.bots import Roster, RunningBot
from services.signal.bots_api import PositionStatus, bots_api
from services.signal.config import SignalSettings
from services.signal.feeds.coinbase import CoinbaseFeed, make_client, parse_live_spec
from services.signal.feeds.random_walk import parse_walk_spec, random_walk
from services.signal.feeds.replay import ReplayError, parse_replay_spec, read_ticks, replay
from services.signal.intents import Market, decide_intent
from services.signal.lockstep import Lockstep, SettleTimeout
from services.signal.protection import protective_exit
from services.signal.registry import BotRegistry
from services.signal.store import SignalRecord, already_handled, record
from services.signal.temperature import band_of
from shared import subjects
from shared.bots import LiveCatalog
from shared.bus import InvalidMessage, delivery_of, durable
from shared.catalog import CatalogError, load_catalog
from shared.contracts import (
    BotChanged,
    BotReadiness,
    InjectedSignal,
    PositionUpdate,
    Reason,
    Side,
    SignalEvaluation,
    Ticker,
    TradeIntent,
)
from shared.eventtime import NewestTimes, bounds_for
from shared.http import bearer_guard
from shared.logging import correlated
from shared.money import utc_now
from shared.positions import watch_positions as follow_positions
from shared.service import Service, serve
from shared.streams import SIGNAL_INJECT

INTENTS = Counter("tranche_signal_intents_total", "Intents created", ["action", "band"])
NO_INTENT = Counter("tranche_signal_no_intent_total", "Signals that made no intent", ["code"])
EVALUATIONS = Counter("tranche_signal_evaluations_total", "Evaluations published", ["bot_id"])
STALE = Gauge(
    "tranche_signal_market_stale", "1 while a product's market data is stale", ["product_id"]
)


def build(settings: SignalSettings) -> Service:
    service = Service(settings, [SignalRecord])
    log = service.log
    try:
        catalog = load_catalog(settings.config_file)
        replays = parse_replay_spec(settings.replay)
        walks = parse_walk_spec(settings.random_walk)
        live_products = parse_live_spec(settings.coinbase_feed)
        live = LiveCatalog(catalog)
        roster = Roster(live)
    except (CatalogError, ReplayError, ValueError) as error:
        raise SystemExit(f"signal: {error}") from None
    registry = BotRegistry(live, service.transact)
    markets: dict[str, Market] = {}
    # A tick far ahead of the newest (or of the clock) would become "now" for good: refused.
    ticker_times = NewestTimes(bounds_for(settings.mode), utc_now)
    last_tick: dict[str, float] = {}  # product -> monotonic time of its last tick
    stale: set[str] = set()
    positions: dict[str, PositionUpdate] = {}
    lockstep = (
        Lockstep(lambda: service.nc, settings.replay_settle_timeout_s)
        if settings.replay_lockstep and replays
        else None
    )
    positions_read = asyncio.Event()

    async def act(
        bot_id: str,
        running: RunningBot,
        side: Side,
        temperature: Decimal,
        signal_id: str,
        time: datetime,
        source: str,
        protective: Reason | None = None,
    ) -> TradeIntent | None:
        bot = running.config
        outcome: TradeIntent | Reason
        if side == "buy" and running.state.paused:
            outcome = Reason(
                code="BOT_PAUSED", message=f"bot {bot_id} is paused: no entries or adds"
            )
        elif side == "buy" and bot.product_id in stale:
            outcome = Reason(
                code="STALE_MARKET_DATA",
                message=f"no tick for {bot.product_id} in {settings.stale_after_s:g} s: no entry",
            )
        else:
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
                protective=protective,
            )
        intent = outcome if isinstance(outcome, TradeIntent) else None
        reason = outcome.reason if isinstance(outcome, TradeIntent) else outcome

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
                log.info("intent.created", action=staged.action, side=side, band=staged.band,
                         reason=reason.code)  # fmt: skip
            elif intent is None:
                NO_INTENT.labels(reason.code).inc()
                log.info("signal.no_intent", code=reason.code, reason=reason.message)
        if staged is not None and lockstep is not None:
            lockstep.created(staged.intent_id, staged.bot_id)
        return staged

    async def publish_evaluation(evaluation: SignalEvaluation) -> None:
        assert service.nc is not None
        await service.nc.publish(
            subjects.for_token(subjects.SIGNALS_EVALUATED, evaluation.bot_id),
            evaluation.model_dump_json().encode(),
        )
        EVALUATIONS.labels(evaluation.bot_id).inc()

    async def confirm(
        bot_id: str,
        running: RunningBot,
        side: Side | Literal["hold"],
        temperature: Decimal,
        time: datetime,
        signal_id: str,
        source: str,
        score: Decimal | None,
        skip_confirmation: bool = False,
    ) -> None:
        """Feed the bot's confirmation; act when it fires; publish the evaluation either way."""
        runtime = running.runtime
        band = band_of(temperature)
        runtime.temperature = temperature
        progress = runtime.confirmation.feed(side, band, time)
        intent = None
        if side != "hold" and (progress.fires or skip_confirmation):
            intent = await act(bot_id, running, side, temperature, signal_id, time, source)
        held = progress.held_for(time).total_seconds()
        await publish_evaluation(
            SignalEvaluation(
                bot_id=bot_id,
                product_id=running.config.product_id,
                time=time,
                direction=side,
                temperature=temperature,
                band=band,
                score=score,
                confirmations=progress.count,
                confirmations_needed=progress.needed,
                confirming_since=progress.since,
                confirm_seconds=int(runtime.confirmation.hold.total_seconds()),
                intent_id=intent.intent_id if intent else None,
                reason=Reason(
                    code="CONFIRMED" if progress.fires or skip_confirmation else "EVALUATED",
                    message=(
                        f"{source}: {side} at temperature {temperature}, {progress.count} of "
                        f"{progress.needed} evaluations over {held:g} s"
                    ),
                ),
            )
        )

    @durable(service.router, SIGNAL_INJECT, title="signal-inject")
    async def on_inject(body: InjectedSignal, msg: NatsMessage) -> None:
        delivery = delivery_of(msg)
        bot_id = subjects.last_token(delivery.subject)
        running = roster.get(bot_id)
        if running is None:
            raise InvalidMessage(
                Reason(code="UNKNOWN_BOT", message=f"no bot named {bot_id!r} is configured")
            )
        if body.confirmed and settings.mode == "production":
            raise InvalidMessage(
                Reason(
                    code="CONFIRMED_IN_PRODUCTION", message="confirmed=true is for mock mode only"
                )
            )
        # The stream's time with its sequence: a stream lost and refilled counts from 1 again.
        stamp = f"-{delivery.stream_time:%Y%m%dT%H%M%S%f}" if delivery.stream_time else ""
        signal_id = body.message_id or f"inject-{delivery.stream_sequence}{stamp}"
        time = body.time or delivery.stream_time or utc_now()
        temperature = (
            body.temperature if body.temperature is not None else running.config.inject_temperature
        )
        with correlated(body.correlation_id or signal_id, bot_id=bot_id):
            log.info("signal.injected", side=body.side, temperature=str(temperature))
        await confirm(
            bot_id, running, body.side, temperature, time, signal_id, body.source, None,
            body.confirmed,
        )  # fmt: skip

    async def protect(bot_id: str, running: RunningBot, tick: Ticker) -> None:
        """Stop-loss, take-profit, trailing stop: on every tick, paused or not."""
        position = positions.get(bot_id)
        if position is None or position.status != "open" or position.position_id is None:
            return
        runtime = running.runtime
        high = max(runtime.highest.get(position.position_id, tick.price), tick.price)
        runtime.highest[position.position_id] = high
        reason = protective_exit(running.config, position, tick.price, high)
        if reason is not None:
            # One protective exit per state of the position: a redelivered tick or the next
            # tick before the ledger has booked the exit asks for nothing more.
            signal_id = f"protect:{bot_id}:{position.position_id}:{position.sequence}"
            await act(bot_id, running, "sell", runtime.temperature, signal_id, tick.time,
                      reason.code, protective=reason)  # fmt: skip

    @service.router.subscriber(subjects.all_of(subjects.MARKET_TICKER), title="signal-ticker")
    async def on_ticker(body: Ticker) -> None:
        try:
            await evaluate_tick(body)
        finally:
            if lockstep is not None:
                lockstep.ticked(body)

    async def evaluate_tick(body: Ticker) -> None:
        ticker_times.admit(body.product_id, body.time, "ticker time")
        known = markets.get(body.product_id)
        if known is not None and body.time < known.time:
            return  # an older tick never replaces a newer price
        markets[body.product_id] = Market(price=body.price, time=body.time)
        last_tick[body.product_id] = monotonic()
        if body.product_id in stale:
            stale.discard(body.product_id)
            STALE.labels(body.product_id).set(0)
            log.info("market.fresh", product_id=body.product_id)
        for bot_id, running in roster.trading(body.product_id):
            await protect(bot_id, running, body)
            runtime = running.runtime
            candle = runtime.candles.add(body.price, body.time)
            if candle is None or runtime.blend is None:
                continue
            evaluation = runtime.blend.update(candle)
            await confirm(
                bot_id,
                running,
                evaluation.direction,  # type: ignore[arg-type]
                evaluation.temperature,
                candle.end,
                f"candle:{bot_id}:{candle.end.isoformat()}",
                "signals",
                evaluation.score,
            )

    async def watch_staleness() -> None:
        while True:
            await asyncio.sleep(1)
            now = monotonic()
            for product_id in (roster.products() | set(live_products)) - stale:
                seen = last_tick.get(product_id)
                if seen is not None and now - seen > settings.stale_after_s:
                    stale.add(product_id)
                    STALE.labels(product_id).set(1)
                    log.warning("market.stale", product_id=product_id,
                                silent_s=round(now - seen, 1))  # fmt: skip

    async def keep_position(position: PositionUpdate) -> None:
        known = positions.get(position.bot_id)
        if known is None or known.mode != position.mode or position.sequence >= known.sequence:
            positions[position.bot_id] = position
            if lockstep is not None:
                lockstep.position(position)

    async def watch_positions() -> None:
        assert service.nc is not None
        await follow_positions(service.nc, keep_position, positions_read.set)

    def position_of(bot_id: str) -> PositionStatus:
        position = positions.get(bot_id)
        if position is not None:
            return position.status
        return "flat" if positions_read.is_set() else "unknown"

    orders_in_flight: dict[str, int] = {}
    """Per bot, safety's count of its orders not final yet (from its readiness messages)."""

    @service.router.subscriber(
        subjects.all_of(subjects.SAFETY_READINESS), title="signal-safety-readiness"
    )
    async def on_readiness(body: BotReadiness) -> None:
        if body.mode == settings.mode:
            orders_in_flight[body.bot_id] = body.orders_in_flight

    async def position_fixed(bot_id: str) -> str | None:
        """Why what a bot's position means (its product) may not change now, or None: it holds
        a position, or an order of it is in flight (its fills would land in the old product)."""
        reason = await open_position(bot_id)
        if reason is None and orders_in_flight.get(bot_id, 0) > 0:
            reason = (
                f"bot {bot_id} has {orders_in_flight[bot_id]} order(s) in flight: wait until "
                "they are final (pause it meanwhile)"
            )
        return reason

    async def open_position(bot_id: str) -> str | None:
        """Why a bot may not be removed now, or None."""
        try:
            await asyncio.wait_for(positions_read.wait(), 5)
        except TimeoutError:
            return "the positions bucket could not be read: try again in a moment"
        position = positions.get(bot_id)
        if position is not None and position.status == "open":
            return (
                f"bot {bot_id} holds {position.quantity} {position.product_id} ({position.mode}):"
                " exit or flatten it first (pause it meanwhile)"
            )
        return None

    async def load_bots() -> None:
        assert service.nc is not None
        await registry.connect(service.nc)
        seeded = await registry.seed(catalog.bots, settings.bots_reseed)
        held = await registry.load(service.nc)
        log.info("bots.loaded", seeded=seeded, in_bucket=held, running=len(roster.running))

    async def follow_bots() -> None:
        assert service.nc is not None
        await live.follow(service.nc)

    async def publish_ticker(tick: Ticker) -> None:
        assert service.nc is not None
        await service.nc.publish(
            subjects.for_token(subjects.MARKET_TICKER, tick.product_id),
            tick.model_dump_json().encode(),
        )

    feeds: dict[str, dict[str, object]] = {}

    async def run_feeds() -> None:
        async def one_replay(product_id: str, path: Path) -> None:
            feeds[product_id] = {"kind": "replay", "file": path.name, "finished": False}
            ticks = read_ticks(path, product_id)
            barrier = lockstep.after_tick if lockstep is not None else None
            try:
                count = await replay(ticks, publish_ticker, settings.replay_speed,
                                     after_publish=barrier)  # fmt: skip
            except (SettleTimeout, ReplayError) as error:
                feeds[product_id] |= {"finished": True, "failed": str(error)}
                log.error("replay.failed", product_id=product_id, error=str(error))
                return
            feeds[product_id] |= {"finished": True, "ticks": count}
            if lockstep is not None:
                feeds[product_id]["lockstep"] = {
                    "intents": lockstep.intents,
                    "evaluate_s": round(lockstep.evaluate_s, 1),
                    "settle_s": round(lockstep.settle_s, 1),
                }
            log.info("replay.finished", product_id=product_id, ticks=count)

        async def one_walk(product_id: str, price: Decimal) -> None:
            feeds[product_id] = {"kind": "random_walk", "finished": False}
            product = live.products.get(product_id)
            increment = product.quote_increment if product else Decimal("0.01")
            ticks = random_walk(product_id, price, utc_now(), seed=settings.random_walk_seed,
                                increment=increment)  # fmt: skip
            await replay(ticks, publish_ticker, speed=1.0)

        async def one_live(product_id: str) -> None:
            client = make_client(settings.coinbase_base_url, settings.coinbase_timeout_s,
                                 str(settings.coinbase_ca_file or "") or None)  # fmt: skip
            feed = CoinbaseFeed(client, product_id, publish_ticker,
                                interval_s=settings.coinbase_poll_s,
                                max_backoff_s=settings.coinbase_max_backoff_s)  # fmt: skip
            feeds[product_id] = feed.status
            # A feed that never answers goes stale too: its clock starts now.
            last_tick.setdefault(product_id, monotonic())
            await feed.run()

        await asyncio.gather(
            *(one_replay(product, path) for product, path in replays),
            *(one_walk(product, price) for product, price in walks),
            *(one_live(product) for product in live_products),
        )

    api = APIRouter(tags=["signal"])

    @api.get("/feeds", summary="The market-data feeds this service runs and how far they are")
    async def feed_status() -> dict[str, dict[str, object]]:
        return {
            product: status
            | {
                "last_price": str(markets[product].price) if product in markets else None,
                "last_time": markets[product].time.isoformat() if product in markets else None,
                "stale": product in stale,
            }
            for product, status in feeds.items()
        }

    service.http_routers.append(api)
    guard = bearer_guard(settings.control_token, "TRANCHE_CONTROL_TOKEN on signal", "changing bots")
    service.http_routers.append(
        bots_api(
            registry,
            guard,
            position_of,
            open_position,
            lambda b: roster.get(b) is not None,
            position_fixed=position_fixed,
        )
    )
    service.publishes("tranche.intents.{bot_id}", TradeIntent, "A trade intent (outbox).")
    service.publishes(
        "tranche.signals.evaluated.{bot_id}", SignalEvaluation, "Every evaluation (core NATS)."
    )
    service.publishes(
        "tranche.market.ticker.{product_id}", Ticker, "Replayed or simulated market data."
    )
    if lockstep is not None:
        service.on_start.append(lockstep.start)
    service.publishes(
        subjects.BOTS_CHANGED, BotChanged, "A bot created, changed, paused, resumed or removed."
    )
    service.on_start.append(load_bots)
    service.background.append(follow_bots)
    service.background.append(watch_positions)
    service.background.append(watch_staleness)
    if replays or walks or live_products:
        service.background.append(run_feeds)
    return service


def main() -> None:
    serve(build, SignalSettings)
