"""The backtest: recorded market data through the services' own decision code in one process.

The signal's handlers, safety's ``decide_and_store`` / ``record_order_event`` /
``record_position``, the executor (its state machine on the mock exchange, filling at the
intent's price) and the ledger's ``book_order_event`` run as the services run them, each on its
own in-memory SQLite database (``inprocess.py``). What a service stages in its outbox is handed,
in order, to the handlers that consume its subject: an in-memory bus, no NATS.

After each tick the bus runs until nothing is left to deliver, as ``tranche replay``'s lock step
waits until every intent so far has settled: so the backtest decides what the replay decides, and
its journal (the same kinds of messages, per bot, in order) has the same fingerprint.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from services.executor.config import ExecutorSettings
from services.executor.exchanges.mock import MockExchange, Quote
from services.executor.gateway import Gateway
from services.executor.ratelimit import RateLimiter
from services.executor.sync import Executor
from services.executor.tables import SERVICE_TABLES as EXECUTOR_TABLES
from services.ledger.config import LedgerSettings
from services.ledger.handling import book_order_event
from services.ledger.store import TABLES as LEDGER_TABLES
from services.safety.config import SafetySettings
from services.safety.handlers import (
    decide_and_store,
    record_order_event,
    record_position,
    report_breach,
)
from services.safety.rules import Market
from services.safety.store import TABLES as SAFETY_TABLES
from services.signal.feeds.replay import CANDLE, read_ticks
from services.signal.handlers import SignalHandlers
from services.signal.store import TABLES as SIGNAL_TABLES
from shared import subjects
from shared.catalog import Catalog
from shared.contracts import (
    OrderApproved,
    OrderEvent,
    OrderRejected,
    PositionUpdate,
    SafetyEvent,
    Ticker,
    TradeIntent,
    TrancheCapBreach,
)
from tranche.backtest.inprocess import FixedBots, InlineExecutor, MemoryStore
from tranche.backtest.result import (
    BacktestResult,
    BookedFill,
    BotRun,
    BreakerTrip,
    Decision,
    Mark,
    OpenPosition,
    RoundTrip,
)
from tranche.journal import Journal, fingerprint, group

MAX_TRANCHES = 3


def is_trip(event: dict[str, Any]) -> bool:
    """A breaker's trip (``caused_by`` "breaker <code> on ...") or a tranche-cap breach; a
    limit reached is a rejection, told with the decisions."""
    return event.get("caused_by", "").startswith("breaker ") or (
        event["code"] == "TRANCHE_CAP_BREACHED"
    )


class BacktestError(Exception):
    pass


def why(action: str, intent_reason: str | None) -> str:
    """Why an order was asked, as the result tells it, from its order event (the intent's reason
    code the ledger books with each fill): ``ENTRY`` for an entry or an add, ``SIGNAL_EXIT`` for
    an exit the strategy asked, else the protective exit's code (``STOP_LOSS``, ``TAKE_PROFIT``,
    ``TRAILING_STOP``, ``STOP_ON_EXCHANGE``, ``FLATTEN``...)."""
    if action != "exit":
        return "ENTRY"
    return "SIGNAL_EXIT" if intent_reason in (None, "SIGNAL") else intent_reason


# -- the feed ----------------------------------------------------------------------------------


def file_ticks(
    path: Path, product_id: str, start: datetime | None = None, end: datetime | None = None
) -> Iterator[Ticker]:
    """The file's ticks as the replay feed reads them, keeping the rows whose own time (a
    candle's open time, a trade's time) is in ``[start, end)``, as ``tranche replay --start
    --end`` slices them."""
    with path.open() as handle:
        header = handle.readline()
    offset = CANDLE if "close" in header.strip().split(",") else timedelta(0)
    for tick in read_ticks(path, product_id):
        at = tick.time - offset
        if start is not None and at < start:
            continue
        if end is not None and at >= end:
            break
        yield tick


def merged(feeds: Iterable[Iterator[Ticker]]) -> Iterator[Ticker]:
    """Several products' ticks in market-time order (ties: in the order the files were given)."""

    def key(n: int, ticks: Iterator[Ticker]) -> Iterator[tuple[datetime, int, Ticker]]:
        return ((tick.time, n, tick) for tick in ticks)

    for _, _, tick in heapq.merge(*(key(n, ticks) for n, ticks in enumerate(feeds))):
        yield tick


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Options:
    fee_rate: Decimal | None = None
    """The mock exchange's taker fee (default: the executor's setting)."""


@dataclass
class Run:
    """What one backtest produced: the result for the report, the journal for parity."""

    result: BacktestResult
    journal: Journal
    seconds: float
    evaluations: int

    @property
    def candles_per_s(self) -> float:
        return self.result.candles / self.seconds if self.seconds else 0.0


@dataclass
class _Books:
    """What the run saw, gathered from the messages as they pass."""

    kinds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    positions: dict[str, PositionUpdate] = field(default_factory=dict)
    opened: dict[str, tuple[datetime, int]] = field(default_factory=dict)
    fees: dict[str, Decimal] = field(default_factory=dict)


KIND_OF = (
    (subjects.INTENTS + ".", "intent"),
    (subjects.ORDERS_APPROVED + ".", "approved"),
    (subjects.ORDERS_REJECTED + ".", "rejected"),
    (subjects.ORDERS_EVENTS + ".", "order"),
    (subjects.LEDGER_POSITIONS + ".", "position"),
    (subjects.SAFETY_EVENTS, "safety"),
)


def kind_of(subject: str) -> str | None:
    for prefix, kind in KIND_OF:
        if subject.startswith(prefix) or subject == prefix.rstrip("."):
            return kind
    return None


class Backtest:
    """The four services' handlers wired in one process for the bots given."""

    def __init__(self, catalog: Catalog, bot_ids: list[str], options: Options | None = None):
        options = options or Options()
        self.catalog = catalog
        self.bot_ids = bot_ids
        # signal
        self.signal_store = MemoryStore(SIGNAL_TABLES)
        self.bots = FixedBots()
        for bot_id in bot_ids:
            self.bots.add(bot_id, catalog.bots[bot_id])
        self.signal = SignalHandlers(
            bots=self.bots,
            transact=self.signal_store.transact,
            publish_evaluation=None,
            products=catalog.products,  # a stop on the exchange is sized by them
        )
        # safety
        self.safety_store = MemoryStore(SAFETY_TABLES)
        self.safety_settings = SafetySettings()
        self.safety_markets: dict[str, Market] = {}
        # executor: the mock exchange fills at the intent's price, as a replay's does
        self.executor_store = MemoryStore(EXECUTOR_TABLES)
        fees = {"mock_fee_rate": options.fee_rate} if options.fee_rate is not None else {}
        self.executor_settings = ExecutorSettings(mock_fill_at="intent", **fees)  # type: ignore[arg-type]  # pydantic-settings takes field values as keywords
        self.quotes: dict[str, Quote] = {}
        self.exchange = MockExchange(
            self.executor_store.engine,
            catalog.products,
            None,
            self.quotes.get,
            self.executor_settings.mock_settings(),
        )
        gateway = Gateway(
            self.exchange,
            RateLimiter(1e9),
            attempts=self.executor_settings.retry_attempts,
            base_delay_s=0,
            max_delay_s=0,
            seed=self.executor_settings.mock_seed,
        )
        self.executor = Executor(
            self.executor_store,  # type: ignore[arg-type]  # the executor uses engine, transact and read only
            self.executor_settings,
            catalog,
            gateway,
            event_clock=lambda product_id: (
                self.quotes[product_id].time if product_id in self.quotes else None
            ),
            stamp_at_intent=True,
        )
        # ledger
        self.ledger_store = MemoryStore(LEDGER_TABLES)
        self.ledger_settings = LedgerSettings()
        self.queue: deque[tuple[str, str]] = deque()
        self.books = _Books()
        self.result_marks: list[Mark] = []
        self.candles = 0

    # -- the bus ---------------------------------------------------------------------------------

    def _collect(self, store: MemoryStore) -> None:
        for message in store.drain():
            self.queue.append((message.subject, message.payload))

    async def settle(self) -> None:
        """Deliver every staged message, and what it causes, until nothing is left."""
        self._collect(self.signal_store)
        while self.queue:
            subject, payload = self.queue.popleft()
            await self._deliver(subject, payload)

    async def _deliver(self, subject: str, payload: str) -> None:
        kind = kind_of(subject)
        if kind is not None:
            self.books.kinds.setdefault(kind, []).append(json.loads(payload))
        if kind == "intent":
            intent = TradeIntent.model_validate_json(payload)
            await self.safety_store.transact(
                lambda session: decide_and_store(
                    session,
                    intent,
                    self.safety_settings,
                    positions_synced=True,
                    markets=self.safety_markets,
                )
            )
            self._collect(self.safety_store)
        elif kind == "rejected":
            # As the signal's subscriber of rejections: a refused stop is asked again.
            await self.signal.stop_refused(OrderRejected.model_validate_json(payload))
            self._collect(self.signal_store)
        elif kind == "approved":
            await self.executor.on_approval(OrderApproved.model_validate_json(payload))
            await self._finish_orders()
            self._collect(self.executor_store)
        elif kind == "order":
            await self._order_event(OrderEvent.model_validate_json(payload))
        elif kind == "position":
            position = PositionUpdate.model_validate_json(payload)
            self._note_position(position)
            await self.signal.keep_position(position)
            self._collect(self.signal_store)
            await self.safety_store.transact(
                lambda session: record_position(session, position, self.safety_settings)
            )
            self._collect(self.safety_store)
        elif kind == "safety":
            await self._safety_event(SafetyEvent.model_validate_json(payload))
        elif subject.startswith(subjects.LEDGER_BREACHES + "."):
            breach = TrancheCapBreach.model_validate_json(payload)
            await self.safety_store.transact(lambda session: report_breach(session, breach))
            self._collect(self.safety_store)

    async def _finish_orders(self) -> None:
        """Poll the executor's open orders until none changes (the mock fills market orders at
        once; a resting limit order waits for the next tick)."""
        for cid in list(self.executor._due):
            await self.executor.sync(cid)

    async def _order_event(self, event: OrderEvent) -> None:
        """Every order event, in stream order, to the three services that consume them: safety,
        the signal (its durable consumer hears its stops rest or end; while the exchange holds
        one, its own stop-loss stands down) and the ledger."""
        await self.safety_store.transact(
            lambda session: record_order_event(session, event, self.safety_settings)
        )
        self._collect(self.safety_store)
        await self.signal.stop_event(event)
        self._collect(self.signal_store)
        product = self.catalog.products[event.product_id]
        bot = self.catalog.bots.get(event.bot_id)
        allocation = (bot.exit_allocation if bot else None) or self.ledger_settings.exit_allocation
        await self.ledger_store.transact(
            lambda session: book_order_event(
                session, event, product, allocation, self.catalog.products
            )
        )
        self._collect(self.ledger_store)

    async def _safety_event(self, event: SafetyEvent) -> None:
        """As the signal service's and the executor's safety-event handlers take it."""
        await self.signal.safety_event(event)
        self._collect(self.signal_store)
        await self.executor.on_safety_event(event)
        self._collect(self.executor_store)

    # -- the feed --------------------------------------------------------------------------------

    async def tick(self, tick: Ticker) -> None:
        """One tick to every service that reads prices, then the signal, then settle."""
        self.candles += 1
        self.result_marks.append(Mark(tick.time, tick.product_id, tick.price))
        self.safety_markets[tick.product_id] = Market(price=tick.price, time=tick.time)
        self.quotes[tick.product_id] = Quote(price=tick.price, time=tick.time)
        if self.exchange.on_quote(tick.product_id):
            await self._finish_orders()
            self._collect(self.executor_store)
        await self.signal.evaluate_tick(tick)
        await self.settle()

    # -- what it made ----------------------------------------------------------------------------

    def _note_position(self, position: PositionUpdate) -> None:
        bot = position.bot_id
        before = self.books.positions.get(bot)
        if position.status == "open" and (before is None or before.status != "open"):
            self.books.opened[bot] = (position.time, len(self.books.kinds.get("order", [])))
        self.books.positions[bot] = position

    def journal(self) -> Journal:
        found: Journal = {}
        for kind, bodies in self.books.kinds.items():
            found |= group(kind, bodies)
        return found

    def result(self, start: datetime, end: datetime) -> BacktestResult:
        fills, round_trips = self._fills_and_round_trips()
        last_price = {mark.product_id: mark.price for mark in self.result_marks}
        open_positions = [
            OpenPosition(
                bot_id=p.bot_id,
                product_id=p.product_id,
                opened_at=self.books.opened.get(p.bot_id, (p.time, 0))[0],
                tranches=len(p.tranches),
                quantity=p.quantity,
                cost_basis=p.cost_basis,
                realized_pnl=p.realized_pnl,
                unrealized_pnl=(
                    p.quantity * last_price[p.product_id] - p.cost_basis
                    if p.product_id in last_price
                    else Decimal(0)
                ),
                fees=p.fees_paid,
            )
            for p in self.books.positions.values()
            if p.status == "open"
        ]
        decisions = [
            Decision(
                at=datetime.fromisoformat(body["time"]),
                bot_id=body["intent"]["bot_id"],
                intent_id=body["intent"]["intent_id"],
                approved=kind == "approved",
                reason=None if kind == "approved" else body["reasons"][0]["code"],
            )
            for kind in ("approved", "rejected")
            for body in self.books.kinds.get(kind, [])
        ]
        decisions.sort(key=lambda d: d.at)
        breakers = [
            BreakerTrip(
                at=datetime.fromisoformat(body["time"]),
                bot_id=body.get("bot_id"),
                breaker=body["code"],
                detail=body.get("message", ""),
            )
            for body in self.books.kinds.get("safety", [])
            if is_trip(body)
        ]
        return BacktestResult(
            start=start,
            end=end,
            bots=[self._bot_run(bot_id) for bot_id in self.bot_ids],
            marks=self.result_marks,
            fills=fills,
            round_trips=round_trips,
            open_positions=open_positions,
            decisions=decisions,
            breakers=breakers,
            candles=self.candles,
            fingerprint=fingerprint(self.journal()),
            fee_rate=self.executor_settings.mock_fee_rate,
        )

    def _bot_run(self, bot_id: str) -> BotRun:
        bot = self.catalog.bots[bot_id]
        return BotRun(
            bot_id=bot_id,
            product_id=bot.product_id,
            quote_currency=bot.product_id.split("-")[-1],
            capital=bot.quote_size * MAX_TRANCHES,
        )

    def _fills_and_round_trips(self) -> tuple[list[BookedFill], list[RoundTrip]]:
        """Fills from the order events, round trips from the positions: a position that went
        from open to flat closed one; its P&L is what the bot's realized total moved by."""
        fills = [
            BookedFill(
                at=datetime.fromisoformat(fill["time"]),
                bot_id=event["bot_id"],
                product_id=event["product_id"],
                side="BUY" if event["side"] == "buy" else "SELL",
                price=Decimal(fill["price"]),
                size=Decimal(fill["size"]),
                fee=Decimal(fill["fee"]),
                reason=why(event["action"], event.get("intent_reason")),
            )
            for event in self.books.kinds.get("order", [])
            for fill in event["fills"]
        ]
        round_trips: list[RoundTrip] = []
        last: dict[str, dict[str, Any]] = {}
        opened: dict[str, tuple[datetime, Decimal]] = {}
        for body in self.books.kinds.get("position", []):
            bot, at = body["bot_id"], datetime.fromisoformat(body["time"])
            before = last.get(bot)
            was_open = before is not None and before["status"] == "open"
            if body["status"] == "open" and not was_open:
                total = Decimal(before["realized_pnl_total"]) if before else Decimal(0)
                opened[bot] = (at, total)
            if body["status"] == "flat" and was_open and before is not None:
                since, total = opened[bot]
                own = [f for f in fills if f.bot_id == bot and since <= f.at <= at]
                bought = [f for f in own if f.side == "BUY"]
                sold = [f for f in own if f.side == "SELL"]
                reason = sold[-1].reason if sold else "SIGNAL_EXIT"
                round_trips.append(
                    RoundTrip(
                        bot_id=bot,
                        product_id=body["product_id"],
                        opened_at=since,
                        closed_at=at,
                        tranches=len(before["tranches"]),
                        quantity=sum((f.size for f in bought), Decimal(0)),
                        cost_basis=sum((f.size * f.price + f.fee for f in bought), Decimal(0)),
                        realized_pnl=Decimal(body["realized_pnl_total"]) - total,
                        fees=sum((f.fee for f in own), Decimal(0)),
                        exit_reason=reason,
                    )
                )
            last[bot] = body
        return fills, round_trips


# -- running it --------------------------------------------------------------------------------


def bots_for(catalog: Catalog, products: list[str], wanted: list[str] | None) -> list[str]:
    """The bots to run: those asked for (each must trade a product of the files), or every bot
    of the file whose product is in the files."""
    if not wanted:
        return [b for b, bot in catalog.bots.items() if bot.product_id in products]
    unknown = [b for b in wanted if b not in catalog.bots]
    if unknown:
        raise BacktestError(f"no bot named {', '.join(unknown)} in the bots file")
    missing = [b for b in wanted if catalog.bots[b].product_id not in products]
    if missing:
        raise BacktestError(
            f"{', '.join(missing)} trade a product no file gives ({', '.join(products)})"
        )
    return list(wanted)


async def run_backtest(
    catalog: Catalog,
    files: list[tuple[str, Path]],
    bot_ids: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    options: Options | None = None,
) -> Run:
    """Backtest ``files`` (product, path) merged in market-time order."""
    bots = bots_for(catalog, [product for product, _ in files], bot_ids)
    asyncio.get_running_loop().set_default_executor(InlineExecutor())
    backtest = Backtest(catalog, bots, options)
    feed = merged(file_ticks(path, product, start, end) for product, path in files)
    started = time.perf_counter()
    first = last = None
    for tick in feed:
        first = first or tick.time
        last = tick.time
        await backtest.tick(tick)
    seconds = time.perf_counter() - started
    if first is None or last is None:
        raise BacktestError("no rows in the files for the period asked for")
    result = backtest.result(start or first, end or last)
    return Run(result, backtest.journal(), seconds, backtest.signal.evaluated)
