"""The executor's last check before the exchange (services/executor/trading.py), table-driven."""

from __future__ import annotations

import pytest

from services.executor.trading import SYSTEM, placement_block


@pytest.mark.parametrize(
    ("system", "bot", "action", "code"),
    [
        ("active", "active", "entry", None),
        ("active", "halted", "exit", "TRADING_HALTED"),
        ("halted", "active", "exit", "TRADING_HALTED"),
        ("active", "reducing", "entry", "TRADING_REDUCING"),
        ("active", "reducing", "add", "TRADING_REDUCING"),
        ("active", "reducing", "exit", None),
        ("reducing", "active", "add", "TRADING_REDUCING"),
        ("reducing", "halted", "exit", "TRADING_HALTED"),  # the stricter state applies
        ("halted", "reducing", "exit", "TRADING_HALTED"),
    ],
)
def test_the_stricter_state_decides(system: str, bot: str, action: str, code: str | None) -> None:
    block = placement_block({SYSTEM: system, "b-1": bot}, "b-1", action)
    assert (block.code if block else None) == code
    if block:
        assert "not placed" in block.message or "only exits" in block.message


def test_an_unknown_state_is_active() -> None:
    assert placement_block({}, "b-1", "entry") is None
    assert placement_block({"other": "halted"}, "b-1", "entry") is None
