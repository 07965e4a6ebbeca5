"""Signal service wiring.

Reads:  tranche.signals.inject.<bot>   (durable, consumer signal-inject-v2)
        tranche.market.ticker.<product> (core NATS)
        tranche_positions bucket        (watch)
        tranche.orders.approved|rejected|events.<bot>  (lock-step replay only: ordered
                                        consumers, and safety's consumer's progress, to know
                                        when an intent has settled; services/signal/lockstep.py)
        tranche_bots bucket             (watch: bots created, changed, paused, removed)
        tranche.safety.events           (durable, consumer signal-safety-events-v1: a flatten
                                        asked, a bot resumed, each acted on once; only with
                                        safety's signature, else SAFETY_EVENT_NOT_SIGNED)
        tranche.safety.readiness.<bot>  (core NATS: orders in flight, so removal can wait)
        tranche.orders.events.<bot>     (durable, consumer signal-order-events-v1: the status of
                                        each stop on the exchange, one that ended is asked again;
                                        services/signal/exchange_stop.py; read only with the
                                        executor's signature, else dead-lettered as
                                        ORDER_EVENT_NOT_SIGNED: shared/signing.py)
        tranche.orders.rejected.<bot>   (durable, consumer signal-order-rejections-v1: safety's
                                        refusals of stops on the exchange, one refused is asked
                                        again; only with safety's signature, else dead-lettered
                                        as REJECTION_NOT_SIGNED)
Writes: tranche.intents.<bot>           (outbox)
        tranche_bots bucket             (seeded from the bots file; changed over HTTP /bots)
        tranche.bots.changed            (outbox: every change of a bot)
        tranche.signals.evaluated.<bot> (core NATS)
        tranche.market.ticker.<product> (when it replays recorded data or runs a random walk)
        tranche.dlq.signal              (refused input)
HTTP:   GET /stops                      per bot with stop_on_exchange and an open position: the
                                        stop it asks for, or why none (tranche status, dashboard)
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from time import monotonic

from fastapi import APIRouter
from prometheus_client import Counter, Gauge

from services.signal.bots import Roster
from services.signal.bots_api import PositionStatus, bots_api
from services.signal.config import SignalSettings
from services.signal.feeds.coinbase import CoinbaseFeed, make_client, parse_live_spec
from services.signal.feeds.coinbase_ws import stream_feed
from services.signal.feeds.random_walk import parse_walk_spec, random_walk
from services.signal.feeds.replay import (
    BackInTime,
    ReplayError,
    parse_replay_spec,
    read_ticks,
    replay,
    resume_after,
)
from services.signal.handlers import SignalHandlers
from services.signal.inflight import InFlight
from services.signal.intents import injected_signal_id
from services.signal.lockstep import Lockstep, SettleTimeout
from services.signal.registry import BotRegistry
from services.signal.store import (
    TABLES,
    feed_progress,
    save_feed_progress,
)
from shared import subjects
from shared.bots import LiveCatalog
from shared.bus import (
    InvalidMessage,
    delivery_of,
    durable,
    handled_message,
    require_executors_signature,
    require_signature,
    require_subject_token,
)
from shared.catalog import CatalogError, load_catalog
from shared.contracts import (
    BotChanged,
    BotReadiness,
    InjectedSignal,
    OrderEvent,
    OrderRejected,
    PositionUpdate,
    Reason,
    SafetyEvent,
    SignalEvaluation,
    Ticker,
    TradeIntent,
)
from shared.eventtime import NewestTimes, bounds_for, refuse_time
from shared.http import bearer_guard
from shared.logging import correlated
from shared.money import utc_now
from shared.positions import watch_positions as follow_positions
from shared.service import Service, serve
from shared.stops import AskedStop
from shared.streams import (
    SIGNAL_INJECT,
    SIGNAL_ORDER_EVENTS,
    SIGNAL_ORDER_REJECTIONS,
    SIGNAL_SAFETY_EVENTS,
)

EVALUATIONS = Counter("tranche_signal_evaluations_total", "Evaluations published", ["bot_id"])
STALE = Gauge(
    "tranche_signal_market_stale", "1 while a product's market data is stale", ["product_id"]
)


def build(settings: SignalSettings) -> Service:
    order_events = settings.order_event_verifier()
    safety_events = settings.safety_verifier(
        "it flattens, resumes or asks a refused stop again only as safety says"
    )
    service = Service(settings, TABLES)
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
    # A tick far ahead of the newest (or of the clock) would become "now" for good: refused.
    ticker_times = NewestTimes(bounds_for(settings.mode), utc_now)
    last_tick: dict[str, float] = {}  # product -> monotonic time of its last tick
    lockstep = (
        Lockstep(lambda: service.nc, settings.replay_settle_timeout_s)
        if settings.replay_lockstep and replays
        else None
    )
    positions_read = asyncio.Event()

    async def publish_evaluation(evaluation: SignalEvaluation) -> None:
        assert service.nc is not None
        await service.nc.publish(
            subjects.for_token(subjects.SIGNALS_EVALUATED, evaluation.bot_id),
            evaluation.model_dump_json().encode(),
        )
        EVALUATIONS.labels(evaluation.bot_id).inc()

    in_flight = InFlight()
    service.in_flight = in_flight  # type: ignore[attr-defined]  # for tests and operators

    handlers = SignalHandlers(
        bots=roster,
        transact=service.transact,
        publish_evaluation=publish_evaluation,
        stale_after_s=settings.stale_after_s,
        products=live.products,
        on_intent=(
            (lambda intent: lockstep.created(intent.intent_id, intent.bot_id))
            if lockstep is not None
            else None
        ),
        on_stop=lockstep.stop_told if lockstep is not None else None,
    )
    markets, stale, positions = handlers.markets, handlers.stale, handlers.positions

    @durable(service.router, SIGNAL_INJECT, title="signal-inject")
    async def on_inject(body: InjectedSignal) -> None:
        delivery = delivery_of(handled_message(service.broker))
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
        signal_id = (
            injected_signal_id(bot_id, body.message_id)
            if body.message_id
            else f"inject-{delivery.stream_sequence}{stamp}"
        )
        # Its time feeds the bot's confirmation beside the candles' (event time): without one
        # it acts now in market time, at the product's newest price's time (the stream's
        # receive time, the wall clock, beside 2018 candles stopped the strategy from ever
        # confirming again); one given far ahead of that or of the clock is refused, as a tick
        # is (one dated days ahead did the same).
        market = markets.get(running.config.product_id)
        time = body.time or (market.time if market else delivery.stream_time) or utc_now()
        newest = market.time if market else None
        ahead = refuse_time(time, newest, utc_now(), bounds_for(settings.mode), "signal time")
        if ahead is not None:
            raise InvalidMessage(ahead)
        temperature = (
            body.temperature if body.temperature is not None else running.config.inject_temperature
        )
        with correlated(body.correlation_id or signal_id, bot_id=bot_id):
            log.info("signal.injected", side=body.side, temperature=str(temperature))
        await handlers.confirm(
            bot_id, running, body.side, temperature, time, signal_id, body.source, None,
            body.confirmed, position_wait_s=settings.position_wait_s,
        )  # fmt: skip

    @service.router.subscriber(
        subjects.all_of(subjects.MARKET_TICKER), title="signal-ticker", no_reply=True
    )
    async def on_ticker(body: Ticker) -> None:
        try:
            await evaluate_tick(body)
        finally:
            if lockstep is not None:
                lockstep.ticked(body)

    async def evaluate_tick(body: Ticker) -> None:
        ticker_times.admit(body.product_id, body.time, "ticker time")
        if not await handlers.evaluate_tick(body):
            return
        last_tick[body.product_id] = monotonic()
        if body.product_id in stale:
            stale.discard(body.product_id)
            STALE.labels(body.product_id).set(0)
            log.info("market.fresh", product_id=body.product_id)

    @service.router.subscriber(
        subjects.all_of(subjects.SAFETY_READINESS), title="signal-safety-readiness", no_reply=True
    )
    async def on_readiness(body: BotReadiness) -> None:
        """Safety's count of a bot's orders in flight: a bot is not removed, nor its product
        changed, while it has one."""
        if body.mode == settings.mode:
            in_flight.readiness(body.bot_id, body.orders_in_flight)
            if body.orders_in_flight == 0:
                await handlers.stop_again(body.bot_id, body.time)

    @durable(service.router, SIGNAL_ORDER_EVENTS, title="signal-order-events")
    async def on_order_event(body: OrderEvent) -> None:
        """The stop on the exchange's status (the signal's stop-loss stands down while the
        exchange holds it); one that ended without being meant to is asked again. Durable: an
        event published while the service was down is heard when it is back, on top of the
        state it kept in its database (services/signal/store.py: StopStateRow)."""
        msg = handled_message(service.broker)
        require_subject_token(msg, body.bot_id, "order event")
        require_executors_signature(order_events, msg)
        if body.mode == settings.mode:
            await handlers.stop_event(body)

    @durable(service.router, SIGNAL_ORDER_REJECTIONS, title="signal-order-rejections")
    async def on_rejection(body: OrderRejected) -> None:
        """A stop on the exchange that safety refused is asked again (services/signal/
        exchange_stop.py). Durable: a refusal published while the service was down is heard
        when it is back (its stop state says which stop it asked). Only with safety's
        signature, on the bot's own subject: a forged refusal would have it ask again."""
        msg = handled_message(service.broker)
        require_subject_token(msg, body.intent.bot_id, "refusal")
        require_signature(
            safety_events, msg, "REJECTION_NOT_SIGNED", "a refusal without safety's valid signature"
        )
        if body.mode == settings.mode:
            await handlers.stop_refused(body)

    @durable(service.router, SIGNAL_SAFETY_EVENTS, title="signal-safety-events")
    async def on_safety_event(body: SafetyEvent) -> None:
        """A flatten stands until flat; a resume ends it (handlers.safety_event). Durable: a
        flatten asked while the service was down is carried out when it is back; acted on once
        per event id. Only with safety's signature: a forged flatten request would have the
        signal sell a position."""
        require_signature(
            safety_events,
            handled_message(service.broker),
            "SAFETY_EVENT_NOT_SIGNED",
            "a safety event without safety's valid signature",
        )
        await handlers.safety_event(body)

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
        if lockstep is not None:
            await lockstep.before_position(position)
        if await handlers.keep_position(position) and lockstep is not None:
            lockstep.position(position)

    async def watch_positions() -> None:
        assert service.nc is not None
        await follow_positions(service.nc, keep_position, positions_read.set)

    def position_of(bot_id: str) -> PositionStatus:
        position = positions.get(bot_id)
        if position is not None:
            return position.status
        return "flat" if positions_read.is_set() else "unknown"

    async def open_position(bot_id: str) -> str | tuple[str, str] | None:
        """Why a bot may not be removed now, or None: an order in flight (its fill would leave
        a position no signal protects), an open position, or (flat) its protective stop still
        on the exchange."""
        waiting = in_flight.why_not_removable(bot_id)
        if waiting is not None:
            return "ORDER_IN_FLIGHT", waiting
        held = await held_position(bot_id)
        resting = handlers.stop_resting(bot_id)
        return held or (("STOP_ON_EXCHANGE", resting) if resting is not None else None)

    async def position_fixed(bot_id: str) -> str | None:
        """Why what a bot's position means (its product) may not change now, or None: an order
        of it is in flight (its fills would land in the old product), or it holds a position."""
        return in_flight.why_not_removable(bot_id) or await held_position(bot_id)

    async def held_position(bot_id: str) -> str | None:
        """Why the bot's position stands in the way, or None (flat)."""
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
            last = await service.read(lambda session: feed_progress(session, product_id))
            if last is not None:
                feeds[product_id]["resumed_after"] = last.isoformat()
                log.info("replay.resumed", product_id=product_id, after=last.isoformat())
            ticks = resume_after(read_ticks(path, product_id), last, path)
            barrier = lockstep.after_tick if lockstep is not None else None

            async def publish_and_remember(tick: Ticker) -> None:
                await publish_ticker(tick)
                await service.transact(
                    lambda session: save_feed_progress(session, product_id, tick.time, path.name)
                )

            try:
                count = await replay(ticks, publish_and_remember, settings.replay_speed,
                                     after_publish=barrier)  # fmt: skip
            except BackInTime as error:
                feeds[product_id] |= {"finished": True, "refused": str(error)}
                log.error("replay.refused", product_id=product_id, reason=str(error))
                return
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
            # The WebSocket (the polling feed fills its gaps and stands in when it cannot connect).
            live = stream_feed(settings, product_id, publish_ticker, feed)
            feeds[product_id] = (live or feed).status
            # A feed that never answers goes stale too: its clock starts now.
            last_tick.setdefault(product_id, monotonic())
            await (live or feed).run()

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

    @api.get(
        "/stops",
        summary="Per bot with stop_on_exchange and an open position: its stop, or why none",
    )
    async def stops() -> list[AskedStop]:
        judged = (handlers.asked_stop(b, r) for b, r in list(roster.running.items()))
        return [view for view in judged if view is not None]

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
    service.on_start.append(handlers.load_flattens)
    service.on_start.append(handlers.load_stops)
    service.on_start.append(handlers.load_highs)
    service.background.append(follow_bots)
    service.background.append(watch_positions)
    service.background.append(watch_staleness)
    if replays or walks or live_products:
        service.background.append(run_feeds)
    return service


def main() -> None:
    serve(build, SignalSettings)
