"""What the signal service keeps per bot while it runs: candles, the blend of its signals, its
confirmation, and the highest price since its position opened (for a trailing stop); and the
roster of running bots, which follows the live catalog (bots created, changed, paused, resumed
and removed at run time)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Literal

from services.signal.blend import Blend, Weighted
from services.signal.candles import CandleBuilder
from services.signal.confirmation import Confirmation
from services.signal.signals import create
from shared.bots import BotState, LiveCatalog
from shared.catalog import Bot
from shared.logging import get_logger

log = get_logger("tranche.signal")


@dataclass
class BotRuntime:
    candles: CandleBuilder
    blend: Blend | None
    confirmation: Confirmation
    highest: dict[str, Decimal] = field(default_factory=dict)
    """Highest price seen per position id."""
    temperature: Decimal = Decimal(0)
    """The latest evaluation's temperature."""


def runtime_for(bot_id: str, bot: Bot) -> BotRuntime:
    """Build a bot's signals from its configuration; a bad one is a ValueError naming the bot."""
    try:
        blend = (
            Blend(
                [Weighted(create(s.name, dict(s.params)), s.weight) for s in bot.signals],
                buy_threshold=bot.buy_threshold,
                sell_threshold=bot.sell_threshold,
            )
            if bot.signals
            else None
        )
    except ValueError as error:
        raise ValueError(f"bot {bot_id}: {error}") from None
    return BotRuntime(
        candles=CandleBuilder(timedelta(seconds=bot.candle_s)),
        blend=blend,
        confirmation=Confirmation(bot.confirm_evaluations, timedelta(seconds=bot.confirm_seconds)),
    )


def check_bot(bot_id: str, bot: Bot, products: Mapping[str, object]) -> None:
    """Everything a bot needs beyond its own fields, or a ValueError saying what is wrong: a
    product this deployment knows, and signals that exist with parameters they accept."""
    if bot.product_id not in products:
        known = ", ".join(sorted(products)) or "none"
        raise ValueError(
            f"bot {bot_id} trades {bot.product_id}, which is not a product (known: {known})"
        )
    runtime_for(bot_id, bot)


Plan = Literal["start", "restart", "pause", "resume", "stop", "keep"]


def plan_change(before: BotState | None, after: BotState | None) -> Plan:
    """What the running service does when a bot goes from ``before`` to ``after`` (None: absent).

    A changed config restarts the bot's evaluation from nothing (new candles, indicators and
    confirmation); a pause or resume only flips whether it may buy.
    """
    if after is None:
        return "keep" if before is None else "stop"
    if before is None:
        return "start"
    if before.config != after.config:
        return "restart"
    if before.status != after.status:
        return "pause" if after.paused else "resume"
    return "keep"


@dataclass
class RunningBot:
    state: BotState
    runtime: BotRuntime

    @property
    def config(self) -> Bot:
        return self.state.config


class Roster:
    """The bots this signal service evaluates, kept in step with the live catalog."""

    def __init__(self, live: LiveCatalog):
        self.running: dict[str, RunningBot] = {
            bot_id: RunningBot(state, runtime_for(bot_id, state.config))
            for bot_id, state in live.states.items()
        }
        live.listen(self.on_change)

    def get(self, bot_id: str) -> RunningBot | None:
        return self.running.get(bot_id)

    def trading(self, product_id: str) -> list[tuple[str, RunningBot]]:
        """The bots on ``product_id`` now (a snapshot: safe across awaits)."""
        return [(b, r) for b, r in self.running.items() if r.config.product_id == product_id]

    def products(self) -> set[str]:
        return {running.config.product_id for running in self.running.values()}

    async def on_change(self, bot_id: str, before: BotState | None, after: BotState | None) -> None:
        plan = plan_change(before, after)
        if plan == "keep" and after is None:
            return
        running = self.running.get(bot_id)
        if after is None:
            self.running.pop(bot_id, None)
        elif plan in ("start", "restart") or running is None:
            try:
                runtime = runtime_for(bot_id, after.config)
            except ValueError as error:  # the HTTP API checks first; another writer may not
                self.running.pop(bot_id, None)
                log.error("bot.not_started", bot_id=bot_id, error=str(error))
                return
            if running is not None:
                # The trailing stop follows the position, not the config: keep its high.
                runtime.highest = running.runtime.highest
            self.running = {**self.running, bot_id: RunningBot(after, runtime)}
        else:
            running.state = after
        log.info("bot." + plan, bot_id=bot_id, revision=after.revision if after else None)
