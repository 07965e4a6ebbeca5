"""Safety service wiring.

Reads:  tranche.intents.<bot>           (durable, consumer safety-intents-v1)
Writes: tranche.orders.approved.<bot>   (outbox; only safety may)
        tranche.orders.rejected.<bot>   (outbox, with every reason)
        tranche.dlq.safety              (refused input)
HTTP:   GET /decisions                  recent decisions with their reasons
"""

from __future__ import annotations

import json
from datetime import timedelta

from fastapi import APIRouter, Query
from faststream.nats.annotations import NatsMessage
from sqlmodel import Session

from services.safety.config import SafetySettings
from services.safety.rules import Limits, client_order_id_for, decide, decision_time
from services.safety.store import (
    BotStateRow,
    DecisionRow,
    decision_exists,
    load_state,
    recent_decisions,
    save_decision,
)
from shared.bus import durable, require_subject_token
from shared.contracts import OrderApproved, OrderRejected, TradeIntent
from shared.logging import correlated
from shared.money import utc_now
from shared.service import Service, bootstrap
from shared.settings import load
from shared.streams import SAFETY_INTENTS


def build(settings: SafetySettings) -> Service:
    service = Service(settings, [BotStateRow, DecisionRow])
    log = service.log
    limits = Limits(
        entry_cooldown=timedelta(seconds=settings.entry_cooldown_s),
        exit_cooldown=timedelta(seconds=settings.exit_cooldown_s),
    )

    @durable(service.router, SAFETY_INTENTS, title="safety-intents")
    async def on_intent(body: TradeIntent, msg: NatsMessage) -> None:
        require_subject_token(msg, body.bot_id, "intent")

        def change(session: Session) -> OrderApproved | OrderRejected | None:
            if decision_exists(session, body.intent_id):
                return None  # a redelivery: the decision and its message are already stored
            state = load_state(session, body.bot_id, settings.mode)
            now = decision_time(body)
            decision = decide(body, state, limits, now)
            common = {
                "message_id": f"decision-{body.intent_id}",
                "correlation_id": body.intent_id,
                "time": now,
                "intent": body,
                "mode": settings.mode,
                "decided_at": utc_now(),
            }
            message: OrderApproved | OrderRejected
            if decision.approved:
                message = OrderApproved(
                    client_order_id=client_order_id_for(body.intent_id), **common
                )
            else:
                message = OrderRejected(reasons=list(decision.reasons), **common)
            save_decision(session, message, decision.state_after)
            return message

        with correlated(body.intent_id, bot_id=body.bot_id):
            decided = await service.transact(change)
            if isinstance(decided, OrderApproved):
                log.info(
                    "intent.approved", client_order_id=decided.client_order_id, mode=decided.mode
                )
            elif isinstance(decided, OrderRejected):
                log.info("intent.rejected", reasons=[r.code for r in decided.reasons])

    api = APIRouter(tags=["decisions"])

    @api.get("/decisions", summary="Recent decisions, newest first, with every rejection reason")
    async def decisions(limit: int = Query(50, ge=1, le=1000)) -> list[dict]:
        rows = await service.read(lambda session: recent_decisions(session, limit))
        return [
            {
                "intent_id": row.intent_id,
                "bot_id": row.bot_id,
                "mode": row.mode,
                "action": row.action,
                "approved": row.approved,
                "client_order_id": row.client_order_id,
                "reasons": json.loads(row.reasons),
                "decided_at": row.decided_at.isoformat(),
            }
            for row in rows
        ]

    service.publishes(
        "tranche.orders.approved.{bot_id}", OrderApproved, "An approval; only safety sends it."
    )
    service.publishes(
        "tranche.orders.rejected.{bot_id}", OrderRejected, "A rejection with every reason."
    )
    service.http_routers.append(api)
    return service


def main() -> None:
    settings = load(SafetySettings)
    bootstrap(settings)
    build(settings).run()
