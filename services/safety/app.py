"""Safety service wiring.

Reads:  tranche.intents.<bot>             (durable, consumer safety-intents-v2)
        tranche.orders.events.<bot>       (durable, consumer safety-order-events-v2; counted only
                                          with the executor's signature, else dead-lettered as
                                          ORDER_EVENT_NOT_SIGNED: shared/signing.py)
        tranche_positions bucket          (watch; copied to safety_positions)
        tranche.market.ticker.<product>   (core NATS: newest price, for the price band and TTL)
        tranche.ledger.breaches.<bot>     (durable, consumer safety-ledger-breaches-v1)
        tranche.safety.control            (core NATS request/reply, queue group: commands)
Writes: tranche.orders.approved.<bot>     (outbox; only safety may)
        tranche.orders.rejected.<bot>     (outbox, with every reason)
        tranche.safety.events             (outbox: trips, resets, halts, limits reached, the
                                          ledger's tranche-cap breaches; only safety may)
        tranche.dlq.safety                (refused input)
HTTP:   GET /decisions?bot=               decisions with their reasons and counters
        GET /states                       trading states and the current mode
        POST /halt, POST /resume          the kill switch (bearer token)
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
import uuid
from datetime import datetime
from time import monotonic
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query
from faststream.nats import NatsResponse
from faststream.nats.annotations import NatsMessage
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from pydantic import BaseModel, Field, StrictBool, ValidationError
from sqlmodel import Session, select

from services.safety.config import SafetySettings
from services.safety.control import run_command
from services.safety.facts import ledger_behind
from services.safety.handlers import (
    decide_and_store,
    readiness_of,
    record_order_event,
    record_position,
    report_breach,
)
from services.safety.readiness import BotClock, ReadinessPublisher
from services.safety.rules import Market, decision_time
from services.safety.store import (
    SYSTEM,
    TABLES,
    TradingStateRow,
    decisions,
    latest_decision_times,
    mode_now,
    serialise_sqlite_writers,
)
from shared import subjects
from shared.bots import read_record
from shared.bus import (
    InvalidMessage,
    delivery_of,
    durable,
    handled_message,
    reasons_from,
    require_executors_signature,
    require_subject_token,
)
from shared.contracts import (
    BotReadiness,
    OrderApproved,
    OrderEvent,
    OrderRejected,
    PositionUpdate,
    Reason,
    SafetyCommand,
    SafetyCommandResult,
    SafetyEvent,
    Ticker,
    Token,
    TradeIntent,
    TrancheCapBreach,
)
from shared.eventtime import NewestTimes, bounds_for, check_times, refuse_time
from shared.http import answers
from shared.logging import correlated
from shared.money import utc_now
from shared.positions import watch_positions as follow_positions
from shared.service import Service, serve
from shared.signing import key_or_exit, signer_from
from shared.streams import (
    SAFETY_INTENTS,
    SAFETY_LEDGER_BREACHES,
    SAFETY_ORDER_EVENTS,
    stream_for,
)


class ControlRequest(BaseModel):
    bot_id: Token | None = None
    reason: str = Field(default="", max_length=300)
    operator: str = Field(default="http", min_length=1, max_length=64)
    cancel_stops: StrictBool = False
    """``POST /halt``: cancel the protective stops on the exchange too, as ``tranche halt
    --cancel-stops`` does (the dashboard's "halt and cancel stops")."""


def build(settings: SafetySettings) -> Service:
    missing = settings.production_opt_in_missing()
    if settings.mode == "production" and missing:
        raise SystemExit(
            f"safety: production mode needs the executor's opt-in too: {', '.join(missing)}"
        )
    signer = key_or_exit(
        "safety",
        "the executor places only approvals safety signed",
        lambda: signer_from(
            settings.signing_key.get_secret_value() if settings.signing_key else None,
            settings.signing_key_file,
            "TRANCHE_SIGNING_KEY",
        ),
    )
    order_events = settings.order_event_verifier()
    service = Service(settings, TABLES)
    service.sign = signer.headers  # approvals, rejections and safety events, in the outbox
    serialise_sqlite_writers(service.engine)
    if service.engine.dialect.name == "sqlite":
        service.writers = threading.Lock()  # one writer at a time anyway: take turns in-process
    log = service.log
    markets: dict[str, Market] = {}
    # A tick far ahead of the newest (or of the clock) would become "now" for good: refused.
    ticker_times = NewestTimes(bounds_for(settings.mode), utc_now)
    positions_synced = asyncio.Event()
    clocks: dict[str, BotClock] = {}

    # -- readiness: could each bot trade now, and if not why ------------------------------------

    async def assess_bots(bot_ids: set[str]) -> list[BotReadiness]:
        return await service.read(
            lambda session: readiness_of(
                session,
                bot_ids,
                clocks,
                settings,
                positions_synced=positions_synced.is_set(),
                markets=markets,
            )
        )

    async def publish_readiness(readiness: BotReadiness) -> None:
        assert service.nc is not None
        subject = subjects.for_token(subjects.SAFETY_READINESS, readiness.bot_id)
        await service.nc.publish(subject, readiness.model_dump_json().encode())

    readiness = ReadinessPublisher(assess_bots, publish_readiness)

    def heard_of(bot_id: str, product_id: str | None, at: datetime) -> None:
        clocks.setdefault(bot_id, BotClock()).saw(product_id, at)
        readiness.mark(bot_id)

    async def keep_readiness() -> None:
        known = await service.read(latest_decision_times)
        for bot_id, at in known.items():
            heard_of(bot_id, None, at)
        await readiness.run(
            lambda error: log.warning("readiness.not_published", error=type(error).__name__)
        )

    position_saved = [asyncio.Event()]  # replaced after every save, so no waiter misses one

    # -- intents -------------------------------------------------------------------------------

    def decide_intent(session: Session, body: TradeIntent) -> OrderApproved | OrderRejected | None:
        return decide_and_store(
            session, body, settings, positions_synced=positions_synced.is_set(), markets=markets
        )

    async def reject_without_storage(body: TradeIntent, error: Exception) -> None:
        """Fail closed: after its last attempt an intent safety cannot store a decision for is
        rejected straight to NATS (the same message id a stored decision would carry, so
        JetStream drops a second one). The error is logged by type only."""
        now = decision_time(body)
        rejection = OrderRejected(
            message_id=f"decision-{body.intent_id}",
            correlation_id=body.intent_id,
            time=now,
            intent=body,
            mode=settings.mode,
            decided_at=utc_now(),
            reasons=[
                Reason(
                    code="STORAGE_UNAVAILABLE",
                    message="safety cannot read or write its state: no trade until it can",
                )
            ],
        )
        assert service.nc is not None
        await service.nc.jetstream().publish(
            subjects.for_token(subjects.ORDERS_REJECTED, body.bot_id),
            rejection.model_dump_json().encode(),
            headers={"Nats-Msg-Id": rejection.message_id},
            stream=stream_for(subjects.ORDERS_REJECTED + ".x").name,
            timeout=5,
        )
        log.error("intent.rejected_without_storage", error=type(error).__name__)

    async def refuse_time_ahead(body: TradeIntent) -> None:
        """An intent's market time is its decision's "now" (windows, cooldowns, breaker resets): one
        far ahead of the clock or of the product's newest tick is refused (dead-lettered with
        the reason), never adopted, as ticks and fills are. Bounded as the mode approvals are
        made in now (a switch to production tightens it to minutes)."""
        try:
            mode = await service.read(lambda session: mode_now(session, settings.mode))
        except Exception:  # storage trouble: the tightest bound here, the decision handles it
            mode = "production"
        # The market time it was made at, else its own (a signal's, without a price: refused as
        # NO_MARKET_DATA, then only the clock bounds it; the market may lie far behind it).
        at = decision_time(body)
        newest = ticker_times.newest(body.product_id) if body.market_time is not None else None
        reason = refuse_time(at, newest, utc_now(), bounds_for(mode), "intent time")
        if reason:
            raise InvalidMessage(reason)

    @durable(service.router, SAFETY_INTENTS, title="safety-intents")
    async def on_intent(body: TradeIntent) -> None:
        msg = handled_message(service.broker)
        require_subject_token(msg, body.bot_id, "intent")
        await refuse_time_ahead(body)
        if not positions_synced.is_set():
            # Just started: give the bucket watch a moment rather than reject as unknown.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(positions_synced.wait(), settings.positions_wait_s)
        else:
            await wait_for_ledger(body.bot_id)
        with correlated(body.intent_id, bot_id=body.bot_id):
            try:
                decided = await service.transact(lambda session: decide_intent(session, body))
            except Exception as error:
                if delivery_of(msg).num_delivered < settings.storage_attempts:
                    raise  # retried with a backoff: storage may be back in a moment
                await reject_without_storage(body, error)
                return
            heard_of(body.bot_id, body.product_id, decision_time(body))
            if isinstance(decided, OrderApproved):
                log.info(
                    "intent.approved", client_order_id=decided.client_order_id, mode=decided.mode
                )
            elif isinstance(decided, OrderRejected):
                log.info("intent.rejected", reasons=[r.code for r in decided.reasons])

    # -- order events: one order in flight, fills for cooldowns, breakers -----------------------

    @durable(service.router, SAFETY_ORDER_EVENTS, title="safety-order-events")
    async def on_order_event(body: OrderEvent) -> None:
        msg = handled_message(service.broker)
        require_executors_signature(order_events, msg)
        require_subject_token(msg, body.bot_id, "order event")
        check_times([body.time, *(fill.time for fill in body.fills)], utc_now(),
                    bounds_for(body.mode), "order event time")  # fmt: skip
        with correlated(body.intent_id, bot_id=body.bot_id, client_order_id=body.client_order_id):
            news = await service.transact(
                lambda session: record_order_event(session, body, settings)
            )
            for item in news:
                log.warning("breaker.tripped", code=item.code, state=item.state)
            heard_of(body.bot_id, body.product_id, body.time)

    @durable(service.router, SAFETY_LEDGER_BREACHES, title="safety-ledger-breaches")
    async def on_breach(body: TrancheCapBreach) -> None:
        msg = handled_message(service.broker)
        require_subject_token(msg, body.bot_id, "tranche-cap breach")
        event = await service.transact(lambda session: report_breach(session, body))
        log.warning("tranche_cap.breached", bot_id=body.bot_id, event_id=event.message_id)

    # -- positions and prices ------------------------------------------------------------------

    async def keep_position(position: PositionUpdate) -> None:
        try:
            news = await service.transact(
                lambda session: record_position(session, position, settings)
            )
        except Exception as error:  # the next update or a restart brings it again
            log.warning("position.not_saved", bot_id=position.bot_id, error=str(error))
        else:
            for item in news:
                log.warning("breaker.tripped", code=item.code, state=item.state)
            heard_of(position.bot_id, position.product_id, position.time)
        position_saved[0].set()
        position_saved[0] = asyncio.Event()

    async def wait_for_ledger(bot_id: str) -> None:
        """A position a moment behind the fills safety has recorded (the ledger and safety read
        the same order events; the ledger's position comes after) is waited for, up to
        ``positions_wait_s``, rather than rejected as unknown at once: otherwise an intent right
        after a fill would be decided differently depending on which of the two was quicker."""
        deadline = monotonic() + settings.positions_wait_s
        while True:
            saved = position_saved[0]
            try:
                behind = await service.read(
                    lambda session: ledger_behind(session, bot_id, settings.mode)
                )
            except Exception:  # storage trouble: the decision fails closed on it, not here
                return
            left = deadline - monotonic()
            if not behind or left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(saved.wait(), left)

    async def watch_positions() -> None:
        assert service.nc is not None
        # Once the initial values are in, a missing key means a flat bot.
        await follow_positions(service.nc, keep_position, positions_synced.set)

    @service.router.subscriber(
        subjects.all_of(subjects.MARKET_TICKER), title="safety-ticker", no_reply=True
    )
    async def on_ticker(body: Ticker) -> None:
        ticker_times.admit(body.product_id, body.time, "ticker time")
        known = markets.get(body.product_id)
        if known is None or body.time >= known.time:
            markets[body.product_id] = Market(price=body.price, time=body.time)

    # -- commands ------------------------------------------------------------------------------

    async def bot_exists(bot_id: str) -> bool:
        """A bot of the deployment (in the tranche_bots bucket, not removed) or one safety has
        decided for or heard of. When the bucket cannot be read, yes: a halt must not fail on it."""
        if bot_id in clocks:
            return True
        assert service.nc is not None
        try:
            bucket = await service.nc.jetstream().key_value(subjects.BOTS_BUCKET)
            entry = await bucket.get(bot_id)
        except (KeyNotFoundError, KeyDeletedError):
            return False
        except Exception as error:
            log.warning("bots.unreadable", error=type(error).__name__)
            return True
        record = read_record(bot_id, entry.value or b"")
        return record is None or record.status != "removed"

    async def command(body: SafetyCommand) -> SafetyCommandResult:
        exists = await bot_exists(body.bot_id) if body.bot_id else True
        result = await service.transact(
            lambda session: run_command(
                session,
                body,
                start_mode=settings.mode,
                production_missing=settings.production_opt_in_missing(),
                now=utc_now(),
                bot_exists=exists,
            )
        )
        log.info(
            "safety.command",
            command=body.command,
            target=body.bot_id or SYSTEM,
            operator=body.operator,
            ok=result.ok,
            code=result.code,
        )
        if body.bot_id and exists:
            readiness.mark(body.bot_id)
        elif not body.bot_id:
            readiness.mark_all()
        return result

    @service.broker.subscriber(subjects.SAFETY_CONTROL, queue="safety", title="safety-control")
    async def on_command(msg: NatsMessage) -> NatsResponse:
        """A ``SafetyCommand`` request; the reply is a ``SafetyCommandResult`` signed by safety.
        Every request gets one: a command that does not parse is refused with the reason
        (``INVALID_COMMAND``) rather than left to the requester's timeout."""
        result = await answer_command(msg)
        payload = result.model_dump_json().encode()
        # Signed for the requester's own inbox: the CLI says "halted" only on safety's word.
        return NatsResponse(payload, headers=signer.headers(msg.raw_message.reply, payload))

    async def answer_command(msg: NatsMessage) -> SafetyCommandResult:
        try:
            body = SafetyCommand.model_validate_json(msg.body or b"")
        except ValidationError as error:
            reasons = "; ".join(reason.message for reason in reasons_from(error))
            log.warning("safety.command_invalid", reasons=reasons[:300])
            return SafetyCommandResult(
                ok=False, code="INVALID_COMMAND", message=f"not a safety command: {reasons}"[:500]
            )
        return await command(body)

    def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
        expected = settings.control_token.get_secret_value() if settings.control_token else ""
        given = (authorization or "").removeprefix("Bearer ").strip()
        # compare_digest: no timing hint about the token; the token itself is never logged.
        if not expected or not given or not hmac.compare_digest(given, expected):
            raise HTTPException(
                401,
                "a valid bearer token is required (TRANCHE_CONTROL_TOKEN on safety)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    api = APIRouter(tags=["safety"])

    @api.post(
        "/halt",
        summary="Kill switch: halt one bot or everything",
        dependencies=[Depends(require_token)],
        responses=answers(401),
    )
    async def halt(request: ControlRequest) -> SafetyCommandResult:
        return await command(
            SafetyCommand(command="halt", command_id=str(uuid.uuid4()), **request.model_dump())
        )

    @api.post(
        "/resume",
        summary="Resume one bot or everything after a halt or a tripped breaker",
        dependencies=[Depends(require_token)],
        responses=answers(401),
    )
    async def resume(request: ControlRequest) -> SafetyCommandResult:
        return await command(
            SafetyCommand(command="resume", command_id=str(uuid.uuid4()), **request.model_dump())
        )

    @api.get("/decisions", summary="Decisions, newest first, with reasons and counters seen")
    async def list_decisions(
        bot: str | None = None, limit: int = Query(50, ge=1, le=1000)
    ) -> list[dict]:
        rows = await service.read(lambda session: decisions(session, bot, limit))
        return [
            {
                "intent_id": row.intent_id,
                "bot_id": row.bot_id,
                "mode": row.mode,
                "action": row.action,
                "approved": row.approved,
                "client_order_id": row.client_order_id,
                "reasons": json.loads(row.reasons),
                "adjustments": json.loads(row.adjustments),
                "counters": json.loads(row.counters),
                "notional": str(row.notional),
                "market_time": row.market_time.isoformat(),
                "decided_at": row.decided_at.isoformat(),
                "order_status": row.order_status,
                "realized_pnl": None if row.realized_pnl is None else str(row.realized_pnl),
            }
            for row in rows
        ]

    @api.get("/readiness", summary="Each bot's readiness as last published")
    async def all_readiness() -> list[BotReadiness]:
        return [readiness.latest[bot] for bot in sorted(readiness.latest)]

    @api.get(
        "/readiness/{bot_id}",
        summary="One bot's readiness as last published",
        responses=answers(404),
    )
    async def bot_readiness(bot_id: Token) -> BotReadiness:
        if bot_id not in readiness.latest:
            raise HTTPException(404, f"safety has not judged bot {bot_id} yet")
        return readiness.latest[bot_id]

    @api.get("/states", summary="Trading states (system and bots) and the current mode")
    async def states() -> dict:
        rows = await service.read(lambda session: list(session.exec(select(TradingStateRow))))
        system = next((r for r in rows if r.scope == SYSTEM), None)
        return {
            "mode": (system.mode if system and system.mode else settings.mode),
            "states": [
                {
                    "scope": r.scope,
                    "state": r.state,
                    "code": r.code,
                    "message": r.message,
                    "caused_by": r.caused_by,
                    "resets_at": r.resets_at.isoformat() if r.resets_at else None,
                }
                for r in rows
            ],
        }

    service.publishes(
        "tranche.orders.approved.{bot_id}", OrderApproved, "An approval; only safety sends it."
    )
    service.publishes(
        "tranche.orders.rejected.{bot_id}", OrderRejected, "A rejection with every reason."
    )
    service.publishes(
        subjects.SAFETY_EVENTS,
        SafetyEvent,
        "Breaker tripped or reset, halt, resume, flatten requested, mode changed, limit reached.",
    )
    service.publishes(
        "tranche.safety.readiness.{bot_id}",
        BotReadiness,
        "Whether the bot could enter and exit now, and every reason it could not (core NATS).",
    )
    service.background.append(watch_positions)
    service.background.append(keep_readiness)
    service.http_routers.append(api)
    return service


def main() -> None:
    serve(build, SafetySettings)
