"""Position accounting for one bot: ledger fills in, positions out.

Pure (standard library only, no I/O, no clock). Prices are quote per base, sizes base, fees,
costs and P&L quote. Never float.

Long-only spot, one position per bot (DESIGN.md): a ``buy`` fill is an entry, a ``sell`` an exit.
Fills are booked in the order they happened: the ``sequence`` the executor stamps on the order
event that brought them, then their place in it (never by trade id; fills of messages without a
sequence, older than the stamp, come first, by time, in the order given). Flat -> open (first
entry fill) -> reduced by exits -> closed when nothing remains, or when the exit order is final,
its last fill is booked and what remains is below ``min_size``. That remainder is *dust*: it
leaves the books and its cost basis is realized as a loss (``Position.dust_cost``), because it
cannot be sold. The next entry opens a new position.

A fill is identified by the exchange's ``entry_id`` (its ``trade_id`` when there is none).
Coinbase's adjustments repeat the ``trade_id`` of the fill they adjust: a ``REVERSAL`` takes that
fill back, a ``CORRECTION`` replaces its price, size and fee; the fill keeps its place in the
sequence, so the books read as if the exchange had reported the right fill the first time, and
``Book.adjustments`` says what each adjustment changed.
Buy fills sharing a ``client_order_id`` form one tranche; past ``MAX_TRANCHES`` a tranche is
booked anyway and flagged. Exits are split ``pro_rata`` (by remaining size, so the average entry
holds) or ``fifo`` (oldest first). An oversell books what is held, carries the whole fill fee
(it was paid) and records the excess as ``Position.unmatched_exit_size``; a sell while flat books
nothing and lands in ``Book.unmatched_exits`` / ``Book.unmatched_exit_size``.

Invariants, exact ``Decimal`` equality: on every position the tranches' ``remaining_size``,
``remaining_cost`` and ``realized_pnl`` sum to ``quantity``, ``cost_basis`` and ``realized_pnl``;
each exit's ``per_tranche`` parts sum to its ``size`` and ``realized_pnl``; ``realized_pnl ==
sum(exit.realized_pnl) - dust_cost``. Quantities and costs are never negative.

Rounding happens only here:

1. Pro-rata quantity: each tranche gets ``qty * r_i / R`` rounded *down* to ``size_increment``
   (never more than it holds); the residual goes to the largest remaining tranches.
2. Money splits: the cost of a partial take (``C_i * q_i / r_i``) and a tranche's share of the
   exit fee (``fee * q_i / qty``) are rounded down to ``MONEY_QUANTUM`` (1e-18, the scale of a
   NUMERIC(38, 18) column). A whole remainder takes its whole cost and the last fee share is the
   fee minus the others, so the parts always add up.
3. ``entry_price``, ``average_entry_price`` and ``break_even_price`` are divisions at 28
   significant digits: outputs only, never fed back into the books.

Both floors are exact integer divisions. All other arithmetic runs in a 100-digit context that
traps ``Inexact``, so any other rounding fails loudly instead of leaking.
"""

from __future__ import annotations

import decimal
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Context, Decimal, localcontext
from typing import Literal

FillKind = Literal["FILL", "REVERSAL", "CORRECTION", "SYNTHETIC"]
ADJUSTMENTS = ("REVERSAL", "CORRECTION")

MAX_TRANCHES = 3
MONEY_QUANTUM = Decimal("1E-18")
ZERO = Decimal(0)
Allocation = Literal["pro_rata", "fifo"]

_EXACT = Context(
    prec=100,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow, decimal.Inexact],
)
_DISPLAY = Context(prec=28)


@dataclass(frozen=True)
class LedgerFill:
    trade_id: str
    client_order_id: str
    side: Literal["buy", "sell"]
    price: Decimal  # quote per base
    size: Decimal  # base
    fee: Decimal  # quote
    time: datetime  # aware UTC
    entry_id: str | None = None  # the exchange's unique id of this record; None: trade_id is
    trade_type: FillKind = "FILL"
    # Where it was booked: the sequence of the order event that first brought it and its place
    # there. Not part of the fill's facts (a redelivery in a later event is the same fill).
    sequence: int | None = field(default=None, compare=False)
    index: int = field(default=0, compare=False)
    # Why its order was asked (the intent's reason code: ``SIGNAL``, ``STOP_ON_EXCHANGE``...);
    # ``None`` for fills of events from before the executor said. Not a fact of the fill either.
    reason: str | None = field(default=None, compare=False)
    # The product its order traded: a bot's history may span products (moved while flat), and
    # each fill is booked with its own product's minimum size and increment.
    product_id: str | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        """The dedupe key: a fill seen twice under one key is one fill."""
        return self.entry_id or self.trade_id

    @property
    def place(self) -> tuple:
        """Booking order; unstamped (older) fills first, by time, ties in the order given."""
        if self.sequence is None:
            return (0, self.time)
        return (1, self.sequence, self.index)


@dataclass(frozen=True)
class Adjustment:
    """A reversal or correction as booked, with what it changed on the bot's books (quote and
    base, the books with it minus the books without it)."""

    entry_id: str
    trade_id: str  # the fill it adjusts
    trade_type: FillKind
    found: bool  # False: no fill with that trade id is booked (yet); it changed nothing
    quantity_change: Decimal
    cost_basis_change: Decimal
    realized_pnl_change: Decimal
    fees_change: Decimal


@dataclass(frozen=True)
class Tranche:
    index: int  # 1, 2, 3 (4+ on a breach) within its position
    client_order_id: str
    entry_price: Decimal  # size-weighted price of its fills, fees excluded
    size: Decimal  # filled size, base
    remaining_size: Decimal
    entry_fees: Decimal
    remaining_cost: Decimal  # cost basis (fees included) of remaining_size, quote
    realized_pnl: Decimal


@dataclass(frozen=True)
class ExitAllocation:
    """One exit fill as booked; ``size`` is the booked size (an oversell's excess is not in it)."""

    trade_id: str
    size: Decimal
    price: Decimal
    fee: Decimal
    realized_pnl: Decimal
    per_tranche: tuple[tuple[int, Decimal, Decimal], ...]  # (tranche index, qty taken, pnl)
    key: str = ""  # the fill's key (``LedgerFill.key``): its entry id, else its trade id
    time: datetime | None = None  # of the exit fill
    reason: str | None = None  # why its order was asked (``LedgerFill.reason``)


@dataclass(frozen=True)
class Position:
    number: int  # 1 for the bot's first position, 2 for the next...
    status: Literal["open", "closed"]
    opened_at: datetime
    closed_at: datetime | None
    quantity: Decimal
    average_entry_price: Decimal | None  # None when quantity is 0
    break_even_price: Decimal | None
    cost_basis: Decimal  # of the remaining quantity, fees included
    realized_pnl: Decimal
    fees_paid: Decimal  # entry + exit fees
    dust: Decimal
    tranche_breach: bool
    unmatched_exit_size: Decimal
    tranches: tuple[Tranche, ...]
    exits: tuple[ExitAllocation, ...]
    dust_cost: Decimal = ZERO  # cost basis of the dust, written off into realized_pnl
    entries: tuple[LedgerFill, ...] = ()  # its entry fills as booked (adjusted), in order

    @property
    def exit_reason(self) -> str | None:
        """Why a closed position ended: the reason of the exit fill that closed it (``None``
        while open, or when that fill's order came without one)."""
        return self.exits[-1].reason if self.status == "closed" and self.exits else None


@dataclass(frozen=True)
class Book:
    positions: tuple[Position, ...]  # oldest first; the last may be open
    unmatched_exit_size: Decimal  # sells booked while flat (base)
    unmatched_exits: tuple[LedgerFill, ...] = ()  # those sell fills, for the trader to inspect
    adjustments: tuple[Adjustment, ...] = ()

    @property
    def current(self) -> Position | None:
        """The open position, if any."""
        if self.positions and self.positions[-1].status == "open":
            return self.positions[-1]
        return None


def book_fills(
    fills: Iterable[LedgerFill],
    *,
    min_size: Decimal,
    size_increment: Decimal,
    allocation: Allocation = "pro_rata",
    final_orders: Collection[str] | None = None,
    rules: Mapping[str, tuple[Decimal, Decimal]] | None = None,
) -> Book:
    """Book one bot's fills in the order they happened (``LedgerFill.place``), whatever order
    they arrive in. ``final_orders`` names the orders the exchange has finished (``None``: all
    of them, as when rebuilding from a complete history); an exit order closes the position
    only once it is final.

    A key (entry id, else trade id) seen twice with identical facts is booked once, at its
    earliest place; seen twice with different facts it is a :class:`FillConflict`, because no
    order of booking would be right.
    """
    unique: dict[str, LedgerFill] = {}
    for fill in fills:
        _validate(fill)
        seen = unique.setdefault(fill.key, fill)
        if seen != fill:
            raise FillConflict(seen, fill)
        if fill.place < seen.place:
            unique[fill.key] = fill
    ordered = sorted(unique.values(), key=lambda f: f.place)
    adjustments = [f for f in ordered if f.trade_type in ADJUSTMENTS]
    with localcontext(_EXACT):
        book = _book(
            ordered, adjustments, min_size, size_increment, allocation, final_orders, rules
        )
        effects = []
        for adjustment in adjustments:
            others = [a for a in adjustments if a is not adjustment]
            without = _book(
                ordered, others, min_size, size_increment, allocation, final_orders, rules
            )
            effects.append(_effect(adjustment, ordered, book, without))
    return Book(book.positions, book.unmatched_exit_size, book.unmatched_exits, tuple(effects))


class FillConflict(ValueError):
    """One fill key with two different sets of facts: ``booked`` first, ``incoming`` second."""

    def __init__(self, booked: LedgerFill, incoming: LedgerFill):
        super().__init__(f"fill {booked.key!r} appears with different contents")
        self.booked, self.incoming = booked, incoming


def _effective(ordered: list[LedgerFill], adjustments: list[LedgerFill]) -> list[LedgerFill]:
    """The fills as adjusted: the last adjustment naming a trade id wins."""
    latest = {a.trade_id: a for a in adjustments}
    out = []
    for fill in ordered:
        if fill.trade_type in ADJUSTMENTS:
            continue
        adjustment = latest.get(fill.trade_id)
        if adjustment is None:
            out.append(fill)
        elif adjustment.trade_type == "CORRECTION":
            out.append(replace(fill, price=adjustment.price, size=adjustment.size,
                               fee=adjustment.fee))  # fmt: skip
    return out


def _book(
    ordered: list[LedgerFill],
    adjustments: list[LedgerFill],
    min_size: Decimal,
    size_increment: Decimal,
    allocation: Allocation,
    final_orders: Collection[str] | None,
    rules: Mapping[str, tuple[Decimal, Decimal]] | None = None,
) -> Book:
    effective = _effective(ordered, adjustments)
    last_of_order = {fill.client_order_id: fill.key for fill in effective}
    closing = {
        key for order, key in last_of_order.items() if final_orders is None or order in final_orders
    }
    booker = _Booker(min_size, size_increment, allocation, closing, rules)
    for fill in effective:
        booker.apply(fill)
    return booker.book()


def _effect(adjustment: LedgerFill, ordered: list[LedgerFill], book: Book, without: Book):
    def totals(b: Book) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        current = b.current
        return (
            current.quantity if current else ZERO,
            current.cost_basis if current else ZERO,
            sum((p.realized_pnl for p in b.positions), ZERO),
            sum((p.fees_paid for p in b.positions), ZERO),
        )

    after, before = totals(book), totals(without)
    found = any(
        f.trade_id == adjustment.trade_id and f.trade_type not in ADJUSTMENTS for f in ordered
    )
    return Adjustment(
        adjustment.key, adjustment.trade_id, adjustment.trade_type, found,
        *(a - b for a, b in zip(after, before, strict=True)),
    )  # fmt: skip


def unrealized_pnl(position: Position, mark_price: Decimal) -> Decimal:
    """Remaining quantity at ``mark_price`` minus its cost basis (fees included), in quote."""
    with localcontext(_EXACT):
        return position.quantity * mark_price - position.cost_basis


def _validate(fill: LedgerFill) -> None:
    if fill.side not in ("buy", "sell"):
        raise ValueError(f"fill {fill.trade_id!r}: unknown side {fill.side!r}")
    if not (fill.size > 0 and fill.price > 0 and fill.fee >= 0):
        raise ValueError(f"fill {fill.trade_id!r}: size and price must be > 0, fee >= 0")
    if fill.time.utcoffset() is None:
        raise ValueError(f"fill {fill.trade_id!r}: time must be timezone-aware")


def _floor_to(numerator: Decimal, denominator: Decimal, quantum: Decimal) -> Decimal:
    """``numerator / denominator`` rounded down to a multiple of ``quantum``, exactly."""
    return numerator // (denominator * quantum) * quantum


@dataclass
class _OpenTranche:
    index: int
    client_order_id: str
    size: Decimal = ZERO
    notional: Decimal = ZERO  # sum of fill size * fill price
    entry_fees: Decimal = ZERO
    remaining_size: Decimal = ZERO
    remaining_cost: Decimal = ZERO
    realized_pnl: Decimal = ZERO

    def add(self, fill: LedgerFill) -> None:
        self.size += fill.size
        self.notional += fill.size * fill.price
        self.entry_fees += fill.fee
        self.remaining_size += fill.size
        self.remaining_cost += fill.size * fill.price + fill.fee

    @property
    def entry_price(self) -> Decimal:
        return _DISPLAY.divide(self.notional, self.size)

    def freeze(self) -> Tranche:
        state = {name: value for name, value in vars(self).items() if name != "notional"}
        return Tranche(entry_price=self.entry_price, **state)


@dataclass
class _OpenPosition:
    number: int
    opened_at: datetime
    closed_at: datetime | None = None
    tranches: list[_OpenTranche] = field(default_factory=list)
    exits: list[ExitAllocation] = field(default_factory=list)
    dust: Decimal = ZERO
    dust_cost: Decimal = ZERO
    unmatched_exit_size: Decimal = ZERO
    entries: list[LedgerFill] = field(default_factory=list)

    @property
    def quantity(self) -> Decimal:
        return sum((t.remaining_size for t in self.tranches), ZERO)

    def freeze(self) -> Position:
        quantity = self.quantity
        cost = sum((t.remaining_cost for t in self.tranches), ZERO)
        average = break_even = None
        if quantity:
            weighted = sum((t.remaining_size * t.entry_price for t in self.tranches), ZERO)
            average = _DISPLAY.divide(weighted, quantity)
            break_even = _DISPLAY.divide(cost, quantity)
        fees = sum((t.entry_fees for t in self.tranches), ZERO)
        return Position(
            number=self.number,
            status="open" if self.closed_at is None else "closed",
            opened_at=self.opened_at,
            closed_at=self.closed_at,
            quantity=quantity,
            average_entry_price=average,
            break_even_price=break_even,
            cost_basis=cost,
            realized_pnl=sum((t.realized_pnl for t in self.tranches), ZERO),
            fees_paid=fees + sum((e.fee for e in self.exits), ZERO),
            dust=self.dust,
            tranche_breach=len(self.tranches) > MAX_TRANCHES,
            unmatched_exit_size=self.unmatched_exit_size,
            tranches=tuple(t.freeze() for t in self.tranches),
            exits=tuple(self.exits),
            dust_cost=self.dust_cost,
            entries=tuple(self.entries),
        )


class _Booker:
    """Incremental booking; ``apply`` expects fills already deduplicated and in order.

    Call it inside the exact decimal context (``book_fills`` does).
    """

    def __init__(
        self,
        min_size: Decimal,
        size_increment: Decimal,
        allocation: Allocation,
        closing: Collection[str] = (),
        rules: Mapping[str, tuple[Decimal, Decimal]] | None = None,
    ):
        if min_size < 0 or size_increment <= 0:
            raise ValueError("min_size must be >= 0 and size_increment > 0")
        if allocation not in ("pro_rata", "fifo"):
            raise ValueError(f"unknown allocation {allocation!r}")
        self.min_size = min_size
        self.size_increment = size_increment
        self.allocation = allocation
        self.closing = closing  # keys of the last fill of each final order
        self.rules = dict(rules or {})  # product id -> (min size, size increment)
        self.positions: list[_OpenPosition] = []
        self.unmatched_exits: list[LedgerFill] = []

    def apply(self, fill: LedgerFill) -> None:
        if fill.product_id in self.rules:
            self.min_size, self.size_increment = self.rules[fill.product_id]
        current = self.positions[-1] if self.positions else None
        if current is not None and current.closed_at is not None:
            current = None
        if fill.side == "buy":
            self._enter(current, fill)
        elif current is None:
            self.unmatched_exits.append(fill)
        else:
            self._exit(current, fill)

    def _enter(self, position: _OpenPosition | None, fill: LedgerFill) -> None:
        if position is None:
            position = _OpenPosition(number=len(self.positions) + 1, opened_at=fill.time)
            self.positions.append(position)
        for tranche in position.tranches:
            if tranche.client_order_id == fill.client_order_id:
                break
        else:
            tranche = _OpenTranche(len(position.tranches) + 1, fill.client_order_id)
            position.tranches.append(tranche)
        tranche.add(fill)
        position.entries.append(fill)

    def _exit(self, position: _OpenPosition, fill: LedgerFill) -> None:
        qty = min(fill.size, position.quantity)
        position.unmatched_exit_size += fill.size - qty
        takes = self._split(qty, [t.remaining_size for t in position.tranches])
        taken = [(t, q) for t, q in zip(position.tranches, takes, strict=True) if q]
        fee_left = fill.fee
        per_tranche = []
        for n, (tranche, q) in enumerate(taken):
            if q == tranche.remaining_size:  # all of it, so no rounding can strand a remainder
                cost = tranche.remaining_cost
            else:
                cost = _floor_to(tranche.remaining_cost * q, tranche.remaining_size, MONEY_QUANTUM)
            # The last share is what is left, so the shares sum to the fee exactly.
            is_last = n == len(taken) - 1
            fee = fee_left if is_last else _floor_to(fill.fee * q, qty, MONEY_QUANTUM)
            fee_left -= fee
            pnl = q * fill.price - fee - cost
            tranche.remaining_size -= q
            tranche.remaining_cost -= cost
            tranche.realized_pnl += pnl
            per_tranche.append((tranche.index, q, pnl))
        total = sum((p for _, _, p in per_tranche), ZERO)
        exit_ = ExitAllocation(
            fill.trade_id, qty, fill.price, fill.fee, total, tuple(per_tranche), fill.key,
            fill.time, fill.reason,
        )  # fmt: skip
        position.exits.append(exit_)
        remaining = position.quantity
        # Below min_size the rest cannot be sold: dust, but only once the exit order is final
        # and its last fill is booked, or its later fills would find the position gone.
        if remaining == 0 or (remaining < self.min_size and fill.key in self.closing):
            self._close(position, fill.time)

    def _split(self, qty: Decimal, remaining: list[Decimal]) -> list[Decimal]:
        """Quantity to take from each tranche; parts sum to ``qty`` (<= total) exactly."""
        if self.allocation == "fifo":
            takes: list[Decimal] = []
            for size in remaining:
                takes.append(min(size, qty - sum(takes, ZERO)))
            return takes
        total = sum(remaining, ZERO)
        if qty == total:
            return list(remaining)
        takes = [_floor_to(qty * size, total, self.size_increment) for size in remaining]
        residual = qty - sum(takes, ZERO)
        # The residual is a few increments at most; the largest tranches have room for it.
        for i in sorted(range(len(remaining)), key=lambda i: (-remaining[i], i)):
            extra = min(residual, remaining[i] - takes[i])
            takes[i] += extra
            residual -= extra
        return takes

    def _close(self, position: _OpenPosition, time: datetime) -> None:
        position.closed_at = time
        for tranche in position.tranches:
            # Dust cannot be sold (below min_size), so its cost is a realized loss now.
            position.dust += tranche.remaining_size
            position.dust_cost += tranche.remaining_cost
            tranche.realized_pnl -= tranche.remaining_cost
            tranche.remaining_size = ZERO
            tranche.remaining_cost = ZERO

    def book(self) -> Book:
        return Book(
            positions=tuple(p.freeze() for p in self.positions),
            unmatched_exit_size=sum((f.size for f in self.unmatched_exits), ZERO),
            unmatched_exits=tuple(self.unmatched_exits),
        )
