"""Protective stops resting on the exchange (pure): which stop-limit sell a position should have,
and what to do about the stops that are live now.

A bot with ``stop_on_exchange`` keeps one stop-limit sell on the exchange for its whole position:
its stop price is ``stop_loss_pct`` below the break-even price (where the signal service's own
stop-loss triggers), its limit ``stop_limit_offset_pct`` below the stop, its size the holding.
Two invariants hold at every moment, whatever order things happen in:

* never two live stops for one position: a replacement is placed only once the exchange has
  confirmed the cancel of the stop it replaces;
* never a stop larger than the holding: the size is the position's quantity rounded *down* to the
  product's increment, and any other sell of the bot cancels the live stop first
  (:func:`cancel_before_sell`).

No broker, database or clock in here: callers pass the position, the bot and what they know of
the live stops, and get back a plan. docs/safety.md says which protection acts where.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

from shared.catalog import Bot, Product
from shared.contracts import PositionUpdate, Reason
from shared.money import Dec

HUNDRED: Final = Decimal(100)
STOP_INTENT_PREFIX: Final = "stop:"
STOP_BELOW_MINIMUM: Final = "STOP_BELOW_MINIMUM"
STOP_DIRECTION_DOWN: Final = "STOP_DIRECTION_STOP_DOWN"
"""Coinbase's direction of a sell stop: it triggers when the last trade price falls to the stop."""

LiveStatus = Literal["pending", "resting", "cancelling"]
"""``pending``: asked of the exchange, not yet confirmed (it may be resting already);
``resting``: the exchange holds it (untriggered, or triggered and partly filled);
``cancelling``: a cancel is asked and not yet confirmed (it may still fill)."""


@dataclass(frozen=True)
class StopOrder:
    """A protective stop-limit sell: ``size`` in base, prices in quote."""

    size: Decimal
    stop_price: Decimal
    limit_price: Decimal


@dataclass(frozen=True)
class LiveStop:
    """A stop the executor has asked for and not seen final; ``size`` is what remains unfilled."""

    client_order_id: str
    order: StopOrder
    status: LiveStatus


@dataclass(frozen=True)
class StopPlan:
    """What to do now. ``cancel`` first; ``place`` only when nothing else is live (so never both
    at once); ``reason`` says why, for the log, ``tranche status`` and the dashboard."""

    reason: Reason
    cancel: tuple[str, ...] = ()
    place: StopOrder | None = None
    keep: tuple[str, ...] = ()


def _down(value: Decimal, increment: Decimal) -> Decimal:
    return (value / increment).to_integral_value(ROUND_DOWN) * increment


def stop_intent_id(bot_id: str, position_id: str, sequence: int, attempt: int = 0) -> str:
    """The intent id of the stop asked for one state of a position (safety derives the
    ``client_order_id`` from it): the same position at the same sequence always names the same
    stop, so a retry or a redelivery never places a second one. ``attempt`` counts the stops of
    that state the exchange refused or cancelled on its own (asked again, each once)."""
    again = f":{attempt}" if attempt else ""
    return f"{STOP_INTENT_PREFIX}{bot_id}:{position_id}:{sequence}{again}"


def is_stop_intent(intent_id: str) -> bool:
    """A resting stop is no order "in flight": it does not block the bot's other orders, and its
    approval starts no exit cooldown (safety reads this)."""
    return intent_id.startswith(STOP_INTENT_PREFIX)


def desired_stop(
    bot: Bot, position: PositionUpdate | None, product: Product
) -> StopOrder | Reason | None:
    """The stop the position should have on the exchange; ``None`` when it should have none (the
    bot did not opt in, or nothing is held); a :class:`Reason` when it should but cannot (the
    holding is below the product's minimums: the signal service's stop protects it)."""
    if not bot.stop_on_exchange or bot.stop_loss_pct is None:
        return None
    if position is None or position.status != "open" or position.break_even_price is None:
        return None
    size = _down(position.quantity, product.base_increment)
    stop_price = _down(
        position.break_even_price * (1 - bot.stop_loss_pct / HUNDRED), product.quote_increment
    )
    limit_price = _down(
        stop_price * (1 - bot.stop_limit_offset_pct / HUNDRED), product.quote_increment
    )
    if (
        size < product.base_min_size
        or limit_price <= 0
        or size * limit_price < product.quote_min_size
    ):
        return Reason(
            code=STOP_BELOW_MINIMUM,
            message=(
                f"no stop on the exchange: {size} at {limit_price} is below the product's minimum"
                f" size {product.base_min_size} or value {product.quote_min_size}; the signal "
                "service's stop-loss protects the position"
            ),
        )
    return StopOrder(size=size, stop_price=stop_price, limit_price=limit_price)


def plan(desired: StopOrder | Reason | None, live: Sequence[LiveStop]) -> StopPlan:
    """Desired stop vs live stops -> what to do now.

    * A cancel not yet confirmed, or a stop asked and not yet confirmed: wait (cancel any other
      resting stop), never place beside it.
    * One resting stop equal to the desired one: keep it.
    * Anything else resting: cancel it; the replacement is placed on a later plan, once the
      cancel is confirmed (the stop is final).
    * Nothing live and a stop desired: place it.
    """
    resting = [stop for stop in live if stop.status == "resting"]
    unsettled = [stop for stop in live if stop.status != "resting"]
    wanted = desired if isinstance(desired, StopOrder) else None
    keep = next((stop for stop in resting if stop.order == wanted), None) if wanted else None
    if keep is not None and not unsettled:
        others = tuple(s.client_order_id for s in resting if s is not keep)
        return StopPlan(
            reason=Reason(code="STOP_KEPT", message="the live stop matches the position"),
            cancel=others,
            keep=(keep.client_order_id,),
        )
    cancel = tuple(stop.client_order_id for stop in resting)
    if unsettled:
        waiting = ", ".join(f"{s.client_order_id} ({s.status})" for s in unsettled)
        return StopPlan(
            reason=Reason(code="STOP_WAITING", message=f"waiting for the exchange: {waiting}"),
            cancel=cancel,
        )
    if cancel:
        return StopPlan(
            reason=Reason(
                code="STOP_REPLACED" if wanted else "STOP_NOT_WANTED",
                message="the live stop no longer matches the position: cancelled first"
                if wanted
                else "the position needs no stop on the exchange: cancelled",
            ),
            cancel=cancel,
        )
    if wanted is not None:
        return StopPlan(
            reason=Reason(code="STOP_PLACED", message="no live stop: placing one"), place=wanted
        )
    if isinstance(desired, Reason):
        return StopPlan(reason=desired)
    return StopPlan(reason=Reason(code="NO_STOP", message="no stop is wanted and none is live"))


def cancel_before_sell(live: Sequence[LiveStop]) -> tuple[str, ...]:
    """The stops to cancel, and see cancelled, before any other sell of the bot (a signal exit, a
    take-profit, a flatten): a stop left resting could make the two together sell more than the
    holding (and on Coinbase a resting sell holds the base, so the other sell would be refused)."""
    return tuple(stop.client_order_id for stop in live if stop.status != "cancelling")


def blocks_sell(live: Sequence[LiveStop]) -> bool:
    """Whether another sell must wait: some stop is live (resting, asked, or being cancelled)."""
    return bool(live)


StateKind = Literal["live", "pending", "none"]


@dataclass(frozen=True)
class StopState:
    """A position's protective stop as ``tranche status`` and the dashboard show it: ``live``
    (the exchange holds it), ``pending`` (asked, not yet confirmed, or being replaced) or ``none``,
    with the reason in every case; ``order`` and ``client_order_id`` are the live (or waited for)
    stop's, ``size_matches`` whether its size is the size the holding asks for."""

    state: StateKind
    reason: Reason
    holding: Decimal
    client_order_id: str | None = None
    order: StopOrder | None = None
    size_matches: bool | None = None
    live_count: int = 0


def stop_state(
    holding: Decimal,
    wanted: StopOrder | None,
    why_not: Reason | None,
    live: Sequence[LiveStop],
) -> StopState:
    """Join what the signal service asked (``wanted``: the stop the position asks for; else
    ``why_not``: why it asks for none) with the stops the executor holds live for the bot.

    The exchange's word comes first: a resting stop is ``live`` whatever was asked (its size is
    checked against the wanted one, or the holding when nothing is asked); a stop asked or being
    cancelled and not yet confirmed is ``pending``; a stop asked that the executor does not hold
    yet is ``pending``; nothing live and nothing asked is ``none``, with the signal service's
    reason (or, when it gave none, that it has not judged the position yet)."""
    resting = [stop for stop in live if stop.status == "resting"]
    if resting:
        stop = next((s for s in resting if wanted is not None and s.order == wanted), resting[0])
        target = wanted.size if wanted is not None else holding
        matches = stop.order.size == target
        others = len(live) - 1
        said = (
            f"sell {stop.order.size} of {holding} held if the price falls to "
            f"{stop.order.stop_price} (limit {stop.order.limit_price})"
        )
        if not matches:
            said += f": its size is not the {target} the holding asks for"
        if others:
            said += f"; {others} more stop(s) live, being replaced"
        code = "STOP_LIVE" if matches and not others else "STOP_LIVE_MISMATCH"
        return StopState(
            state="live",
            reason=Reason(code=code, message=said),
            holding=holding,
            client_order_id=stop.client_order_id,
            order=stop.order,
            size_matches=matches,
            live_count=len(live),
        )
    if live:
        stop = live[0]
        return StopState(
            state="pending",
            reason=Reason(
                code="STOP_WAITING",
                message=f"{stop.client_order_id} is {stop.status}: waiting for the exchange",
            ),
            holding=holding,
            client_order_id=stop.client_order_id,
            order=stop.order,
            size_matches=stop.order.size == (wanted.size if wanted is not None else holding),
            live_count=len(live),
        )
    if wanted is not None:
        return StopState(
            state="pending",
            reason=Reason(
                code="STOP_ASKED",
                message=(
                    f"asked to sell {wanted.size} if the price falls to {wanted.stop_price} "
                    f"(limit {wanted.limit_price}); not live at the exchange yet"
                ),
            ),
            holding=holding,
            order=wanted,
        )
    return StopState(
        state="none",
        reason=why_not
        or Reason(
            code="STOP_NOT_JUDGED",
            message="the signal service has not judged this position's stop yet (it is not "
            "running, or has had no price since it started); its stop-loss protects it once it has",
        ),
        holding=holding,
    )


# -- what the services say over HTTP, and the join ``tranche status`` and the dashboard make ------


class _View(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class AskedStop(_View):
    """One bot's stop as the signal service judges it (its ``GET /stops``): the stop its open
    position asks for (``wanted``), or why it asks for none (``reason``)."""

    bot_id: str
    product_id: str
    holding: Dec
    wanted_size: Dec | None = None
    stop_price: Dec | None = None
    limit_price: Dec | None = None
    intent_id: str | None = None
    reason: Reason | None = None

    def wanted(self) -> StopOrder | None:
        if self.wanted_size is None or self.stop_price is None or self.limit_price is None:
            return None
        return StopOrder(self.wanted_size, self.stop_price, self.limit_price)


class HeldStop(_View):
    """A stop order the executor holds live (its ``GET /stops``): ``size`` is what remains."""

    bot_id: str
    client_order_id: str
    intent_id: str
    status: LiveStatus
    order_status: str
    size: Dec
    stop_price: Dec
    limit_price: Dec

    def live(self) -> LiveStop:
        order = StopOrder(self.size, self.stop_price, self.limit_price)
        return LiveStop(self.client_order_id, order, self.status)


def live_status(order_status: str, cancel_asked: bool) -> LiveStatus:
    """A live stop order's state for :func:`plan` and :func:`stop_state`: the exchange holds it
    once ``open`` (or partly filled); a cancel asked and not yet confirmed is ``cancelling``."""
    if cancel_asked:
        return "cancelling"
    return "resting" if order_status in ("open", "partially_filled") else "pending"


def stop_states(
    asked: Sequence[AskedStop],
    held: Sequence[HeldStop],
    holdings: Mapping[str, Decimal] | None = None,
) -> dict[str, StopState]:
    """Per bot the signal service judged (those with ``stop_on_exchange`` and an open position),
    its stop state; a live stop of a bot the signal service did not list (it is down, or the
    position just closed) is shown too, measured against ``holdings`` (the ledger's; zero when
    the bot holds nothing)."""
    by_bot: dict[str, list[LiveStop]] = {}
    for stop in held:
        by_bot.setdefault(stop.bot_id, []).append(stop.live())
    states = {
        a.bot_id: stop_state(a.holding, a.wanted(), a.reason, by_bot.get(a.bot_id, ()))
        for a in asked
    }
    for bot_id, live in by_bot.items():
        held_now = (holdings or {}).get(bot_id, Decimal(0))
        states.setdefault(bot_id, stop_state(held_now, None, None, live))
    return states


def state_json(state: StopState) -> dict[str, object]:
    """A stop state as plain JSON data (``tranche status --json``, the dashboard)."""
    order = state.order
    return {
        "state": state.state,
        "code": state.reason.code,
        "reason": state.reason.message,
        "holding": str(state.holding),
        "client_order_id": state.client_order_id,
        "size": str(order.size) if order else None,
        "stop_price": str(order.stop_price) if order else None,
        "limit_price": str(order.limit_price) if order else None,
        "size_matches": state.size_matches,
        "live_count": state.live_count,
    }


Answer = tuple[int | None, Any]
"""An HTTP answer as the views read it: the status code (``None``: no answer) and the JSON body
(or the sentence why there is none)."""


def read_stops(
    asked: Answer, held: Answer, holdings: Mapping[str, Decimal]
) -> tuple[dict[str, StopState], list[str]]:
    """The stop states from the signal service's and the executor's ``GET /stops`` answers, and
    which of the two could not be read (then the states are partial: the views say so rather
    than guess). ``holdings``: the ledger's open quantities, for a live stop nobody judged."""
    answers = {"signal": asked, "executor": held}
    read = {
        name: body
        for name, (code, body) in answers.items()
        if code == 200 and isinstance(body, list)
    }
    unread = [
        f"{name}: {body if code is None else f'HTTP {code}'}"
        for name, (code, body) in answers.items()
        if name not in read
    ]
    judged = [AskedStop.model_validate(row) for row in read.get("signal", [])]
    live = [HeldStop.model_validate(row) for row in read.get("executor", [])]
    return stop_states(judged, live, holdings), unread
