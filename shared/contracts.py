"""Every message contract of DESIGN.md, once.

Contracts are frozen pydantic models that forbid unknown fields: an unexpected field is a reason
on the dead-letter subject, never silently dropped. Durable messages extend :class:`Envelope`
(message id, correlation id, event time, schema version). Money is :data:`shared.money.Dec`:
a decimal string on the wire, ``Decimal`` in code.
"""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.money import Dec, NonNegativeDec, PositiveDec, UtcTime

SCHEMA_VERSION: Final = 1

Mode = Literal["mock", "production"]
Side = Literal["buy", "sell"]
Action = Literal["entry", "add", "exit"]
Band = Literal["frozen", "cool", "warm", "hot"]
OrderStatus = Literal[
    "submitted",
    "open",
    "partially_filled",
    "filled",
    "cancelled",
    "expired",
    "failed",
    "unknown_at_exchange",
]
"""``unknown_at_exchange``: the exchange answers 404 for an order it accepted, past a grace
period (not final: an alert; an operator settles it with ``tranche orders resolve``)."""
FINAL_ORDER_STATUSES: frozenset[str] = frozenset({"filled", "cancelled", "expired", "failed"})
TradingState = Literal["active", "reducing", "halted"]

# A bot id or product id becomes one subject token: no dots, spaces or wildcards.
Token = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]
ReasonCode = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,63}$")]
# Temperature is a score, not money: a JSON number is fine (`"temperature": 80`).
Temperature = Annotated[Decimal, Field(ge=0, le=100, allow_inf_nan=False)]


class Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Envelope(Contract):
    """What every durable message carries."""

    schema_version: Literal[1] = SCHEMA_VERSION
    message_id: Identifier
    correlation_id: Identifier
    time: UtcTime


class Reason(Contract):
    """A stable code for machines and a sentence for the trader."""

    code: ReasonCode
    message: Annotated[str, StringConstraints(min_length=1, max_length=500)]


class Ticker(Contract):
    """``tranche.market.ticker.<product_id>`` (core NATS)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    product_id: Token
    price: PositiveDec
    best_bid: PositiveDec | None = None
    best_ask: PositiveDec | None = None
    time: UtcTime
    source: str = "replay"


class InjectedSignal(Contract):
    """``tranche.signals.inject.<bot_id>``: a signal from outside (NATS CLI, tests).

    Only ``side`` is required, so a bare ``nats pub`` works. A missing ``message_id`` is derived
    from the JetStream sequence (a given one names the signal for its bot only); a missing
    ``time`` is the product's newest market time (the stream's receive time before any price);
    one far ahead of that or of the clock is refused.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    side: Side
    temperature: Temperature | None = None
    """0-100; missing means the bot's default for injected signals."""
    source: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "inject"
    confirmed: bool = False
    message_id: Identifier | None = None
    correlation_id: Identifier | None = None
    time: UtcTime | None = None


class SignalEvaluation(Contract):
    """``tranche.signals.evaluated.<bot_id>`` (core NATS): every evaluation, traded or not."""

    schema_version: Literal[1] = SCHEMA_VERSION
    bot_id: Token
    product_id: Token
    time: UtcTime
    direction: Literal["buy", "sell", "hold"]
    temperature: Temperature
    band: Band
    score: Annotated[Decimal, Field(ge=-1, le=1)] | None = None
    """The blended score, -1 strong sell .. +1 strong buy (none for an injected signal)."""
    confirmations: int = Field(ge=0)
    confirmations_needed: int = Field(ge=0)
    confirming_since: UtcTime | None = None
    """Event time the direction has held since (``None`` on ``hold``): the confirmation timer."""
    confirm_seconds: int = Field(default=0, ge=0)
    """Event seconds the direction must hold, besides ``confirmations_needed`` evaluations."""
    intent_id: Identifier | None = None
    reason: Reason


class TradeIntent(Envelope):
    """``tranche.intents.<bot_id>``: what a bot wants to do, before any limit is judged.

    ``intent_id`` is the correlation id from here on. Buys are sized in quote currency
    (``quote_size``), exits in base (``base_size``).
    """

    intent_id: Identifier
    signal_id: Identifier
    bot_id: Token
    product_id: Token
    action: Action
    side: Side
    quote_size: PositiveDec | None = None
    base_size: PositiveDec | None = None
    temperature: Temperature
    band: Band
    reason: Reason
    reference_price: PositiveDec | None = None
    market_time: UtcTime | None = None
    order_type: Literal["market", "limit", "stop_limit"] = "market"
    """``limit`` is a good-till-cancelled limit order at ``limit_price``, cancelled by the
    executor when it is not filled within ``order_ttl_s`` (or the executor's default).
    ``stop_limit`` is a protective sell resting on the exchange (shared/stops.py): when the last
    trade price falls to ``stop_price`` it becomes a limit order at ``limit_price``; it rests
    until it fills or is cancelled (no time-to-live)."""
    limit_price: PositiveDec | None = None
    # Left off the wire when not set: a reader from before stop orders (extra="forbid") still
    # reads every other intent.
    stop_price: PositiveDec | None = Field(default=None, exclude_if=lambda price: price is None)
    order_ttl_s: int | None = Field(default=None, gt=0, le=30 * 24 * 3600)

    @model_validator(mode="after")
    def _one_size(self) -> TradeIntent:
        if (self.quote_size is None) == (self.base_size is None):
            raise ValueError("exactly one of quote_size and base_size must be set")
        if (self.action == "exit") != (self.side == "sell"):
            raise ValueError("an exit sells and an entry or add buys")
        if (self.order_type != "market") != (self.limit_price is not None):
            raise ValueError("a limit order needs limit_price and a market order has none")
        if (self.order_type == "stop_limit") != (self.stop_price is not None):
            raise ValueError("a stop-limit order needs stop_price and no other order has one")
        if self.order_type == "stop_limit":
            stop, limit = self.stop_price, self.limit_price
            if (
                self.side != "sell"
                or self.base_size is None
                or not (stop and limit and limit <= stop)
            ):
                raise ValueError(
                    "a stop-limit is a protective sell in base, its limit at or below its stop"
                )
        return self


class OrderApproved(Envelope):
    """``tranche.orders.approved.<bot_id>``: only safety publishes it."""

    intent: TradeIntent
    """What to execute: the trader's intent, an exit cut to the position when it asked for more
    (``adjustments`` says so)."""
    client_order_id: Identifier
    mode: Mode
    decided_at: UtcTime
    counters: dict[str, str] = Field(default_factory=dict)
    """What the counted limits had used up when safety decided (for the audit trail)."""
    adjustments: list[Reason] = Field(default_factory=list)


class OrderRejected(Envelope):
    """``tranche.orders.rejected.<bot_id>``: every reason that applied, not only the first."""

    intent: TradeIntent
    mode: Mode
    reasons: Annotated[list[Reason], Field(min_length=1)]
    decided_at: UtcTime
    counters: dict[str, str] = Field(default_factory=dict)


TradeType = Literal["FILL", "REVERSAL", "CORRECTION", "SYNTHETIC"]
"""Coinbase's ``trade_type`` of a fill record: adjustments name the fill they adjust."""


class Fill(Contract):
    trade_id: Identifier
    """The exchange's trade id; not unique for adjustments (a reversal repeats it)."""
    entry_id: Identifier | None = None
    """The exchange's unique id of this fill record (Coinbase's ``entry_id``); the dedupe key.
    ``None`` (the mock, older messages) means ``trade_id`` is unique."""
    trade_type: TradeType = "FILL"
    price: PositiveDec
    size: PositiveDec
    """Base currency, whatever the order was sized in."""
    fee: NonNegativeDec
    """Quote currency."""
    liquidity: Literal["maker", "taker"] = "taker"
    time: UtcTime


class OrderEvent(Envelope):
    """``tranche.orders.events.<bot_id>``: one step of an order's life, with its new fills."""

    bot_id: Token
    product_id: Token
    mode: Mode
    intent_id: Identifier
    client_order_id: Identifier
    exchange_order_id: Identifier | None = None
    action: Action
    side: Side
    status: OrderStatus
    fills: list[Fill] = Field(default_factory=list)
    filled_size: NonNegativeDec = Decimal("0")
    reason: Reason | None = None
    sequence: int | None = Field(default=None, ge=0)
    """Grows with every event the executor publishes for this bot: the order fills happened in."""
    # Left off the wire when not set: a reader from before it (extra="forbid") still reads the
    # events of orders without one (adopted from the exchange, recorded before it was kept).
    intent_reason: ReasonCode | None = Field(default=None, exclude_if=lambda code: code is None)
    """The reason code of the intent the order carries out (``SIGNAL``, ``STOP_LOSS``,
    ``STOP_ON_EXCHANGE``, ``FLATTEN``...): why the order was asked, on every event of it, so the
    ledger books each fill as the entry or exit it is. ``reason`` is the event's own (why it
    failed or was cancelled)."""


class TrancheView(Contract):
    index: int = Field(ge=1)
    client_order_id: Identifier
    entry_price: PositiveDec
    size: PositiveDec
    remaining_size: NonNegativeDec
    fees: NonNegativeDec
    realized_pnl: Dec


class PositionUpdate(Envelope):
    """``tranche.ledger.positions.<bot_id>`` and the ``tranche_positions`` bucket.

    Money is quote currency; ``cost_basis`` is what the remaining quantity cost, entry fees
    included; ``realized_pnl`` belongs to the current position; ``tranches`` lists every entry
    tranche of the current position, each with what remains of it.

    ``sequence`` grows with every change of the bot's book, so a reader can tell which of two
    updates is newer; ``last_order_event_id`` says which order event it already reflects.
    """

    bot_id: Token
    product_id: Token
    mode: Mode
    position_id: Identifier | None
    status: Literal["flat", "open"]
    quantity: NonNegativeDec
    average_entry_price: PositiveDec | None
    break_even_price: PositiveDec | None
    cost_basis: NonNegativeDec
    realized_pnl: Dec
    fees_paid: NonNegativeDec
    tranches: list[TrancheView]
    sequence: int = Field(ge=0)
    last_order_event_id: Identifier | None = None
    realized_pnl_total: Dec = Decimal(0)
    """Realized P&L of every position this bot has had in this mode, the current one included."""
    tranche_breach: bool = False
    """More than three entry tranches were filled (booked as they happened, and reported)."""


class TrancheCapBreach(Envelope):
    """``tranche.ledger.breaches.<bot_id>``: the ledger booked more entry tranches than the cap
    in the bot's current position (reality wins: the fills are booked). Only the ledger sends
    it; safety reports it as its own ``TRANCHE_CAP_BREACHED`` safety event."""

    bot_id: Token
    mode: Mode
    position_number: int = Field(ge=1)
    tranches: int = Field(ge=1)
    max_tranches: int = Field(ge=1)
    message: Annotated[str, StringConstraints(min_length=1, max_length=500)]


class PositionQuery(Contract):
    """``tranche.ledger.query.<bot_id>`` (core NATS request): the bot's current position now."""

    schema_version: Literal[1] = SCHEMA_VERSION
    mode: Mode = "mock"


class PositionAnswer(Contract):
    """The ledger's reply to a :class:`PositionQuery`: the position, or why there is none."""

    schema_version: Literal[1] = SCHEMA_VERSION
    position: PositionUpdate | None = None
    reason: Reason | None = None


class SafetyEvent(Envelope):
    """``tranche.safety.events``: breaker tripped, halt, resume, limit reached."""

    code: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,63}$")]
    message: str
    bot_id: Token | None = None
    state: TradingState | None = None
    caused_by: str


class ReadinessBlock(Contract):
    """One reason a bot cannot trade now; ``until`` is the event time it lifts by itself (a
    cooldown), ``None`` when it lifts only when something happens (a fill, a resume)."""

    code: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,63}$")]
    message: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    until: UtcTime | None = None


class BotReadiness(Contract):
    """``tranche.safety.readiness.<bot_id>`` (core NATS): whether safety would approve an entry
    (or an add) and an exit of the bot *now*, and if not every reason, published after each
    decision, order event, position change and operator command that concerns the bot.

    It is safety's own ``decide`` run on a probe of the smallest size at the newest price safety
    has seen, so the reasons are the rules' own; rules on the order's size are judged on the real
    intent only. ``time`` is the event time it was judged at.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    bot_id: Token
    product_id: Token | None = None
    mode: Mode
    time: UtcTime
    trading_state: TradingState
    can_enter: bool
    entry_blocks: list[ReadinessBlock] = Field(default_factory=list)
    can_exit: bool
    exit_blocks: list[ReadinessBlock] = Field(default_factory=list)
    entry_cooldown_until: UtcTime | None = None
    exit_cooldown_until: UtcTime | None = None
    tranches: int | None = Field(default=None, ge=0)
    """Entry tranches held (``None``: safety does not know the position yet)."""
    max_tranches: int = Field(ge=1)
    orders_in_flight: int = Field(ge=0)


class SafetyCommand(Contract):
    """``tranche.safety.control`` (core NATS request/reply): an operator's command to safety.

    ``halt``/``resume`` act on one bot or (no ``bot_id``) on everything; ``flatten`` asks for an
    exit of the bot's whole position; ``mode`` switches approvals to ``mode`` at once;
    ``limits_reset`` releases a bot's counters (mock only).
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    command: Literal["halt", "resume", "flatten", "mode", "limits_reset"]
    command_id: Identifier
    bot_id: Token | None = None
    mode: Mode | None = None
    reason: Annotated[str, StringConstraints(max_length=300)] = ""
    operator: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "operator"
    cancel_stops: bool = Field(default=False, exclude_if=lambda cancel: not cancel)
    """``halt``: cancel the protective stops resting on the exchange too (a halt keeps them
    otherwise: they only reduce risk). Its safety event's code is ``HALT_CANCEL_STOPS``."""


class SafetyCommandResult(Contract):
    """The answer to a :class:`SafetyCommand`."""

    schema_version: Literal[1] = SCHEMA_VERSION
    ok: bool
    code: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,63}$")]
    message: str
    state: TradingState | None = None
    mode: Mode | None = None


BotChange = Literal["created", "changed", "paused", "resumed", "removed"]
BotStatus = Literal["active", "paused", "removed"]


class BotChanged(Envelope):
    """``tranche.bots.changed``: a bot was created, changed, paused, resumed or removed at run
    time. ``revision`` is the bot's revision in the ``tranche_bots`` bucket after the change
    (a reader that saw a higher revision already ignores it); the bucket holds the config."""

    bot_id: Token
    change: BotChange
    revision: int = Field(ge=1)
    status: BotStatus
    changed_by: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class DeadLetter(Contract):
    """``tranche.dlq.<service>``: a message a service could not accept, with the reason."""

    schema_version: Literal[1] = SCHEMA_VERSION
    message_id: Identifier
    service: str
    subject: str
    payload: str
    """The raw payload as text: exact when it was UTF-8 (then ``payload_base64`` is None);
    otherwise with undecodable bytes replaced and ``payload_base64`` exact."""
    payload_base64: str | None = None
    error: str
    reasons: list[Reason]
    time: UtcTime
    stream_sequence: int | None = None
    stream: str | None = None
    """The stream the refused message is stored in (with ``stream_sequence``): where a replay
    reads it back whole, headers included."""
    payload_bytes: int | None = None
    """The refused payload's full length; more than the letter keeps when it was cut."""
    headers: dict[str, str] | None = None
    """The refused message's own headers (its signature, say), without the server's."""

    @property
    def truncated(self) -> bool:
        return self.payload_bytes is not None and self.payload_bytes > len(self.raw_payload())

    def raw_payload(self) -> bytes:
        """The refused message's bytes (its first 100,000)."""
        if self.payload_base64 is not None:
            return base64.b64decode(self.payload_base64)
        return self.payload.encode()
