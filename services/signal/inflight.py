"""Whether a bot has an order on its way (pure): a bot is not removed while it has one, because
its fill would leave a position no signal protects (issue 15). Safety's readiness messages
(``tranche.safety.readiness.<bot>``, published after every decision and order event) carry the
count of the bot's orders in flight; the latest one per bot is kept.

Not covered: an intent the signal has made and safety has not decided yet (milliseconds as a
rule); its approval then shows in the next readiness, after the removal.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class InFlight:
    _orders: dict[str, int] = field(default_factory=dict)

    def readiness(self, bot_id: str, orders_in_flight: int) -> None:
        """Safety judged the bot again (after a decision, an order event...)."""
        self._orders[bot_id] = orders_in_flight

    def why_not_removable(self, bot_id: str) -> str | None:
        orders = self._orders.get(bot_id, 0)
        if orders <= 0:
            return None
        return (
            f"bot {bot_id} has {orders} order(s) in flight: remove it once they are final "
            "(pause it meanwhile)"
        )
