"""How the exchange has been answering: reachable, degraded, unreachable or refused."""

from __future__ import annotations

from services.executor.exchanges.base import (
    ExchangeError,
    ExchangeUnavailable,
    OrderNotFound,
    OrderRefused,
    RateLimited,
)
from services.executor.health import ExchangeHealth


def test_a_refused_key_is_not_ready_at_once_and_says_why() -> None:
    health = ExchangeHealth()
    health.record(ExchangeError("coinbase get_order: HTTP 401", code="EXCHANGE_UNAUTHORIZED"), 0)
    assert health.state == "refused" and not health.ready
    assert health.describe() == "refused: coinbase get_order: HTTP 401"


def test_429s_and_5xx_are_degraded_then_unreachable_when_nothing_else_answers() -> None:
    health = ExchangeHealth(unreachable_after_s=60)
    health.record(RateLimited("coinbase get_order: HTTP 429"), 0)
    assert health.state == "degraded" and health.ready
    health.record(ExchangeUnavailable("coinbase get_order: HTTP 503"), 59)
    assert health.state == "degraded"
    health.record(ExchangeUnavailable("coinbase get_order: connection failed"), 60)
    assert health.state == "unreachable" and not health.ready


def test_any_answer_on_purpose_shows_the_exchange_is_reachable() -> None:
    health = ExchangeHealth()
    health.record(ExchangeUnavailable("503"), 0)
    for answer in (None, OrderRefused("INSUFFICIENT_FUND"), OrderNotFound("404")):
        health.record(answer, 1)
        assert health.state == "reachable" and health.ready and health.reason == ""
