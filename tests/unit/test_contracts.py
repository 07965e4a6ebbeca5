"""The wire contracts: decimals as strings, aware UTC times, unknown fields refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from shared.contracts import Fill, InjectedSignal, TradeIntent
from shared.money import format_decimal, parse_decimal

FILL = {
    "trade_id": "t-1",
    "price": "0.08909374",
    "size": "1.5",
    "fee": "0.0008",
    "time": "2018-01-20T04:54:00Z",
}


def intent(**changes: object) -> dict:
    base = {
        "message_id": "i-1",
        "correlation_id": "i-1",
        "time": "2018-01-20T04:54:00Z",
        "intent_id": "i-1",
        "signal_id": "s-1",
        "bot_id": "bot-1",
        "product_id": "ETH-BTC",
        "action": "entry",
        "side": "buy",
        "quote_size": "0.01",
        "temperature": 80,
        "band": "hot",
        "reason": {"code": "SIGNAL", "message": "test"},
    }
    return base | changes


def test_money_travels_as_decimal_strings() -> None:
    fill = Fill.model_validate(FILL)
    assert fill.price == Decimal("0.08909374")
    assert json.loads(fill.model_dump_json())["price"] == "0.08909374"


@pytest.mark.parametrize("value", [1.5, 2, True, None, "abc", "NaN", "Infinity", "1" * 50])
def test_a_number_that_is_not_a_decimal_string_is_refused(value: object) -> None:
    with pytest.raises(ValidationError):
        Fill.model_validate(FILL | {"price": value})


def test_small_amounts_never_go_out_in_exponent_form() -> None:
    assert format_decimal(parse_decimal("1E-8")) == "0.00000001"
    fill = Fill.model_validate(FILL | {"fee": "1E-8"})
    assert json.loads(fill.model_dump_json())["fee"] == "0.00000001"


@pytest.mark.parametrize("price", ["0", "-1"])
def test_prices_and_sizes_must_be_positive(price: str) -> None:
    with pytest.raises(ValidationError, match="greater than zero"):
        Fill.model_validate(FILL | {"price": price})


def test_unknown_fields_are_refused_not_dropped() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Fill.model_validate(FILL | {"venue": "x"})


def test_times_must_be_aware_and_come_out_in_utc() -> None:
    with pytest.raises(ValidationError):
        Fill.model_validate(FILL | {"time": "2018-01-20T04:54:00"})
    fill = Fill.model_validate(FILL | {"time": "2018-01-20T05:54:00+01:00"})
    assert fill.time == datetime(2018, 1, 20, 4, 54, tzinfo=UTC)
    assert fill.time.utcoffset().total_seconds() == 0


def test_contracts_are_frozen() -> None:
    fill = Fill.model_validate(FILL)
    with pytest.raises(ValidationError):
        fill.price = Decimal(1)  # type: ignore[misc]


def test_a_bare_injected_signal_needs_only_a_side() -> None:
    signal = InjectedSignal.model_validate_json('{"side": "buy"}')
    assert signal.side == "buy" and signal.message_id is None and signal.temperature is None
    assert InjectedSignal.model_validate_json('{"side":"sell","temperature":80}').temperature == 80


@pytest.mark.parametrize("temperature", [-1, 101, "hot"])
def test_temperature_is_a_number_from_0_to_100(temperature: object) -> None:
    with pytest.raises(ValidationError):
        InjectedSignal.model_validate({"side": "buy", "temperature": temperature})


def test_an_intent_has_exactly_one_size() -> None:
    TradeIntent.model_validate(intent())
    with pytest.raises(ValidationError, match="exactly one"):
        TradeIntent.model_validate(intent(base_size="1"))
    with pytest.raises(ValidationError, match="exactly one"):
        TradeIntent.model_validate(intent(quote_size=None))


def test_an_exit_sells_and_an_entry_buys() -> None:
    with pytest.raises(ValidationError, match="exit sells"):
        TradeIntent.model_validate(intent(action="exit"))
    TradeIntent.model_validate(intent(action="exit", side="sell", quote_size=None, base_size="2"))


@pytest.mark.parametrize("bot_id", ["a.b", "a*", "a b", ">", ""])
def test_a_bot_id_must_be_one_subject_token(bot_id: str) -> None:
    with pytest.raises(ValidationError):
        TradeIntent.model_validate(intent(bot_id=bot_id))


@pytest.mark.parametrize(
    ("value", "wire"),
    [("-25.000000000000000000", "-25"), ("150.00000000", "150"), ("100", "100"), ("1E+2", "100"),
     ("0E-18", "0"), ("-0", "0"), ("0.0100", "0.01"), ("123456789012345678.123456789012345678",
     "123456789012345678.123456789012345678")],
)  # fmt: skip
def test_the_wire_form_drops_trailing_zeros_but_never_digits(value: str, wire: str) -> None:
    assert format_decimal(Decimal(value)) == wire
    assert Decimal(wire) == Decimal(value)
