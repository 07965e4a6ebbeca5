"""Hostile payloads on every subject the services read (hypothesis): each is refused with a
reason on the dead-letter subject, exactly once, nothing trades on it, and every service keeps
running. Payloads are made invalid by construction: a valid message with one thing broken."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import publish, stream_messages, wait_for
from tranche.stack import EmbeddedStack

pytestmark = pytest.mark.e2e

NOW = datetime(2018, 1, 20, tzinfo=UTC).isoformat()
BOT = "dlq-bot"
INTENT = {
    "message_id": "i", "correlation_id": "i", "time": NOW, "intent_id": "i", "signal_id": "s",
    "bot_id": BOT, "product_id": "ETH-BTC", "action": "entry", "side": "buy",
    "quote_size": "0.01", "temperature": 80, "band": "hot",
    "reason": {"code": "SIGNAL", "message": "x"},
}  # fmt: skip
APPROVAL = {
    "message_id": "a", "correlation_id": "i", "time": NOW, "intent": INTENT,
    "client_order_id": "c", "mode": "mock", "decided_at": NOW,
}  # fmt: skip
EVENT = {
    "message_id": "e", "correlation_id": "i", "time": NOW, "bot_id": BOT, "product_id": "ETH-BTC",
    "mode": "mock", "intent_id": "i", "client_order_id": "c", "action": "entry", "side": "buy",
    "status": "filled",
    "fills": [{"trade_id": "t", "price": "0.09", "size": "1", "fee": "0", "time": NOW}],
}  # fmt: skip
# subject -> (valid payload, the service that must refuse it, a money field to abuse)
TARGETS = {
    f"tranche.signals.inject.{BOT}": ({"side": "buy"}, "signal", None),
    f"tranche.intents.{BOT}": (INTENT, "safety", "quote_size"),
    f"tranche.orders.approved.{BOT}": (APPROVAL, "executor", None),
    f"tranche.orders.events.{BOT}": (EVENT, "ledger", None),
}

# Values of the wrong type for every field they replace (no field here takes a list, a bare
# number where text belongs, null, or a boolean), so each case is invalid by construction.
wrong_types = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**60), max_value=10**60),
    st.lists(st.integers(), max_size=3),
    st.none(),
    st.booleans(),
)


@st.composite
def hostile(draw: st.DrawFn) -> tuple[str, bytes, str]:
    subject = draw(st.sampled_from(sorted(TARGETS)))
    valid, service, money = TARGETS[subject]
    kind = draw(st.sampled_from(["unknown_field", "wrong_value", "money", "bytes", "truncated"]))
    payload = dict(valid)
    if kind == "unknown_field":
        payload[draw(st.sampled_from(["leverage", "xx", "price_float"]))] = draw(wrong_types)
        body = json.dumps(payload, allow_nan=True).encode()
    elif kind == "wrong_value":
        key = draw(st.sampled_from(sorted(k for k in payload if k != "temperature")))
        payload[key] = draw(wrong_types)
        body = json.dumps(payload, allow_nan=True).encode()
    elif kind == "money" and money:
        payload[money] = draw(st.one_of(st.floats(), st.integers(), st.just("-5"), st.just("0")))
        body = json.dumps(payload, allow_nan=True).encode()
    elif kind == "bytes":
        body = b"\xff\xfe" + draw(st.binary(max_size=64))
    else:
        text = json.dumps(payload)
        body = text[: draw(st.integers(0, len(text) - 1))].encode()
    if body.strip() in (b"", b"{}") or body == json.dumps(valid).encode():
        body = b"\x00not json"
    return subject, body, service


def letters(stack: EmbeddedStack, service: str) -> list[dict]:
    messages = stream_messages(stack.config.admin_url, "TRANCHE_DLQ", f"tranche.dlq.{service}")
    return [json.loads(m.data) for m in messages]


@settings(
    max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
@given(case=hostile())
def test_a_hostile_payload_is_dead_lettered_once_and_nothing_breaks(
    stack: EmbeddedStack, case: tuple[str, bytes, str]
) -> None:
    subject, body, service = case
    before = len(letters(stack, service))
    publish(stack.config.admin_url, subject, body)

    def refused() -> list[dict] | None:
        found = letters(stack, service)
        return found if len(found) > before else None

    found = wait_for(refused, timeout=20, what=f"{service} to dead-letter {body[:60]!r}")
    assert len(found) == before + 1, "dead-lettered exactly once"
    letter = found[-1]
    assert letter["subject"] == subject and letter["reasons"]
    for name in stack.config.ports:
        assert httpx.get(stack.config.url(name) + "/ready", timeout=5).status_code == 200
