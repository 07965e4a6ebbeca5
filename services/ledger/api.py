"""The ledger's HTTP API (read-only): positions with marks, tranches and exits, fills, realized
P&L by day, a summary. Every figure is derived from stored fills or positions on request."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from sqlmodel import Session

from services.ledger.accounting import Allocation, Book, ExitAllocation, Position
from services.ledger.booking import Booked, recompute
from services.ledger.history import closed_positions, duration_s, to_csv
from services.ledger.reports import Mark, realized_by_day, unrealized
from services.ledger.store import booked_fills, bots_with_fills, fills_of, positions
from shared.bots import LiveCatalog
from shared.catalog import Catalog
from shared.contracts import Mode, PositionUpdate
from shared.http import answers
from shared.money import Dec, UtcTime
from shared.service import Service

NO_MARK = "no market price seen since the ledger started: unrealized P&L unknown, never guessed"


class PositionView(BaseModel):
    position: PositionUpdate
    mark_price: Dec | None
    mark_time: UtcTime | None
    unrealized_pnl: Dec | None
    """Remaining quantity at the mark minus its cost basis (entry fees included), quote."""
    unrealized_note: str | None = None


class TranchePart(BaseModel):
    tranche: int
    size: Dec
    realized_pnl: Dec


class ExitView(BaseModel):
    trade_id: str
    time: UtcTime
    size: Dec
    price: Dec
    fee: Dec
    realized_pnl: Dec
    per_tranche: list[TranchePart]
    reason: str | None = None
    """Why its order was asked: the intent's reason code (``SIGNAL``, ``STOP_LOSS``,
    ``STOP_ON_EXCHANGE``, ``FLATTEN``...); ``None`` for fills booked before the ledger was told."""


class PastPosition(BaseModel):
    number: int
    status: Literal["open", "closed"]
    opened_at: UtcTime
    closed_at: UtcTime | None
    realized_pnl: Dec
    fees_paid: Dec
    dust: Dec
    tranche_breach: bool


class PositionDetail(PositionView):
    allocation: Allocation
    exits: list[ExitView]
    """The current position's exits, each split across its tranches."""
    history: list[PastPosition]


class FillView(BaseModel):
    """A booked fill as the exchange reported it, with where the ledger placed it."""

    trade_id: str
    entry_id: str | None
    trade_type: str
    client_order_id: str
    intent_id: str
    side: str
    price: Dec
    size: Dec
    fee: Dec
    liquidity: str
    time: UtcTime
    sequence: int | None
    """The executor's sequence of the order event that first brought it."""
    order_event_id: str
    intent_reason: str | None = None
    """Why its order was asked (the intent's reason code), when the order event said."""


class EntryView(BaseModel):
    trade_id: str
    entry_id: str | None
    client_order_id: str
    time: UtcTime
    size: Dec
    price: Dec
    fee: Dec
    reason: str | None = None
    """Why its order was asked (the intent's reason code), when the order event said."""


class TrancheHistory(BaseModel):
    index: int
    client_order_id: str
    entry_price: Dec
    size: Dec
    fees: Dec
    realized_pnl: Dec


class ClosedPosition(BaseModel):
    number: int
    status: Literal["open", "closed"]
    opened_at: UtcTime
    closed_at: UtcTime | None
    duration_s: int | None
    entries: list[EntryView]
    exits: list[ExitView]
    tranches: list[TrancheHistory]
    fees_paid: Dec
    realized_pnl: Dec
    """Quote, fees included; the dust's cost (written off) counted in."""
    dust: Dec
    """Base left below the product's minimum size when the exit order finished."""
    dust_cost: Dec
    tranche_breach: bool
    exit_reason: str | None = None
    """Why it ended: the reason of the exit that closed it (``STOP_ON_EXCHANGE`` for a stop
    that filled on the exchange, ``SIGNAL`` for an exit the strategy asked...)."""


class AdjustmentView(BaseModel):
    """A reversal or correction the exchange made to a booked fill, and what it changed."""

    entry_id: str
    trade_id: str
    trade_type: str
    found: bool
    quantity_change: Dec
    cost_basis_change: Dec
    realized_pnl_change: Dec
    fees_change: Dec


class History(BaseModel):
    bot_id: str
    product_id: str
    mode: Mode
    positions: list[ClosedPosition]
    """Closed positions, oldest first."""
    realized_pnl: Dec
    """Of the closed positions."""
    adjustments: list[AdjustmentView]


class DayView(BaseModel):
    bot_id: str
    day: date
    realized_pnl: Dec
    exit_fees: Dec
    exits: int


class Summary(BaseModel):
    mode: Mode
    bots: int
    open_positions: int
    realized_pnl: Dec
    unrealized_pnl: Dec | None
    fees_paid: Dec
    unrealized_note: str | None = None


def exit_view(e: ExitAllocation) -> ExitView:
    return ExitView(
        trade_id=e.trade_id,
        time=e.time,
        size=e.size,
        price=e.price,
        fee=e.fee,
        realized_pnl=e.realized_pnl,
        per_tranche=[TranchePart(tranche=i, size=q, realized_pnl=p) for i, q, p in e.per_tranche],
        reason=e.reason,
    )


def closed_view(p: Position) -> ClosedPosition:
    return ClosedPosition(
        number=p.number,
        status=p.status,
        opened_at=p.opened_at,
        closed_at=p.closed_at,
        duration_s=duration_s(p),
        entries=[
            EntryView(
                trade_id=f.trade_id,
                entry_id=f.entry_id,
                client_order_id=f.client_order_id,
                time=f.time,
                size=f.size,
                price=f.price,
                fee=f.fee,
                reason=f.reason,
            )
            for f in p.entries
        ],
        exits=[exit_view(e) for e in p.exits],
        tranches=[
            TrancheHistory(
                index=t.index,
                client_order_id=t.client_order_id,
                entry_price=t.entry_price,
                size=t.size,
                fees=t.entry_fees,
                realized_pnl=t.realized_pnl,
            )
            for t in p.tranches
        ],
        fees_paid=p.fees_paid,
        realized_pnl=p.realized_pnl,
        dust=p.dust,
        dust_cost=p.dust_cost,
        tranche_breach=p.tranche_breach,
        exit_reason=p.exit_reason,
    )


def view(position: PositionUpdate, mark: Mark | None) -> PositionView:
    if position.status == "flat":
        return PositionView(
            position=position, mark_price=None, mark_time=None, unrealized_pnl=Decimal(0)
        )
    if mark is None:
        return PositionView(
            position=position,
            mark_price=None,
            mark_time=None,
            unrealized_pnl=None,
            unrealized_note=NO_MARK,
        )
    return PositionView(
        position=position,
        mark_price=mark.price,
        mark_time=mark.time,
        unrealized_pnl=position.quantity * mark.price - position.cost_basis,
    )


CSV_ANSWER: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {}}}}


def ledger_api(
    service: Service,
    catalog: Catalog | LiveCatalog,
    allocation_of: Callable[[str], Allocation],
    marks: dict[str, Mark],
) -> APIRouter:
    api = APIRouter(tags=["ledger"])

    def book_of(session: Session, bot_id: str, mode: Mode) -> Booked | None:
        bot = catalog.all_bots[bot_id]
        return recompute(
            session,
            bot_id=bot_id,
            mode=mode,
            product_id=bot.product_id,
            product=catalog.products[bot.product_id],
            allocation=allocation_of(bot_id),
            correlation_id=None,
            last_order_event_id=None,
            products=catalog.products,
        )

    def known_bot(bot_id: str) -> None:
        if bot_id not in catalog.all_bots:
            raise HTTPException(404, f"no bot named {bot_id!r} is configured")

    @api.get("/positions", summary="Every bot's current position, marked at the latest price")
    async def all_positions(mode: Mode = "mock") -> list[PositionView]:
        stored = await service.read(lambda session: positions(session, mode))
        return [view(p, marks.get(p.product_id)) for p in stored]

    @api.get(
        "/positions/{bot_id}",
        summary="One bot's position: tranches, exits split across them, earlier positions",
        responses=answers(404),
    )
    async def one_position(bot_id: str, mode: Mode = "mock") -> PositionDetail:
        known_bot(bot_id)
        bot = catalog.all_bots[bot_id]

        booked = await service.read(lambda session: book_of(session, bot_id, mode))
        if booked is None:
            raise HTTPException(404, f"no fill booked for bot {bot_id!r} in {mode} mode")
        current = booked.book.current
        mark = marks.get(bot.product_id)
        base = view(booked.position, mark)
        amount = unrealized(booked.book, mark)
        return PositionDetail(
            **base.model_dump(exclude={"unrealized_pnl"}),
            unrealized_pnl=amount,
            allocation=allocation_of(bot_id),
            exits=[exit_view(e) for e in (current.exits if current else ())],
            history=[
                PastPosition(
                    number=p.number,
                    status=p.status,
                    opened_at=p.opened_at,
                    closed_at=p.closed_at,
                    realized_pnl=p.realized_pnl,
                    fees_paid=p.fees_paid,
                    dust=p.dust,
                    tranche_breach=p.tranche_breach,
                )
                for p in booked.book.positions
            ],
        )

    async def booked_of(bot_id: str, mode: Mode) -> Booked:
        known_bot(bot_id)
        booked = await service.read(lambda session: book_of(session, bot_id, mode))
        if booked is None:
            raise HTTPException(404, f"no fill booked for bot {bot_id!r} in {mode} mode")
        return booked

    @api.get(
        "/positions/{bot_id}/history",
        summary="A bot's closed positions: entries, exits, tranches, fees, realized P&L, duration",
        responses=answers(404),
    )
    async def position_history(bot_id: str, mode: Mode = "mock") -> History:
        book = (await booked_of(bot_id, mode)).book
        closed = closed_positions(book)
        return History(
            bot_id=bot_id,
            product_id=catalog.all_bots[bot_id].product_id,
            mode=mode,
            positions=[closed_view(p) for p in closed],
            realized_pnl=sum((p.realized_pnl for p in closed), Decimal(0)),
            adjustments=[AdjustmentView(**vars(a)) for a in book.adjustments],
        )

    @api.get(
        "/positions/{bot_id}/history.csv",
        summary="The closed positions' fills as CSV, one row per fill and per dust write-off",
        response_class=PlainTextResponse,
        responses=CSV_ANSWER | answers(404, json=True),
    )
    async def position_history_csv(bot_id: str, mode: Mode = "mock") -> PlainTextResponse:
        book = (await booked_of(bot_id, mode)).book
        return PlainTextResponse(
            to_csv(book, catalog.all_bots[bot_id].product_id),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{bot_id}-{mode}-history.csv"'},
        )

    @api.get("/fills", summary="Booked fills of a bot, oldest first", responses=answers(404))
    async def fills(
        bot_id: str, mode: Mode = "mock", limit: int = Query(500, ge=1, le=10_000)
    ) -> list[FillView]:
        known_bot(bot_id)
        rows = await service.read(lambda session: fills_of(session, bot_id, mode))
        return [FillView.model_validate(row, from_attributes=True) for row in rows[-limit:]]

    def daily(session: Session, bot_id: str, mode: Mode) -> list[DayView]:
        booked = book_of(session, bot_id, mode)
        if booked is None:
            return []
        ledger_fills, _ = booked_fills(session, bot_id, mode)
        return [
            DayView(bot_id=bot_id, **vars(day))
            for day in realized_by_day(booked.book, ledger_fills)
        ]

    @api.get(
        "/pnl/daily",
        summary="Realized P&L by bot and UTC day (of the exit fill)",
        responses=answers(404),
    )
    async def pnl_daily(mode: Mode = "mock", bot_id: str | None = None) -> list[DayView]:
        if bot_id is not None:
            known_bot(bot_id)

        def compute(session: Session) -> list[DayView]:
            bots = [bot_id] if bot_id else bots_with_fills(session, mode)
            return [
                day for bot in bots if bot in catalog.all_bots for day in daily(session, bot, mode)
            ]

        return await service.read(compute)

    @api.get("/summary", summary="Totals for one mode: realized, unrealized, fees, open positions")
    async def summary(mode: Mode = "mock") -> Summary:
        def compute(session: Session) -> list[tuple[str, Book]]:
            books = []
            for bot_id in bots_with_fills(session, mode):
                booked = book_of(session, bot_id, mode)
                if booked is not None:
                    books.append((bot_id, booked.book))
            return books

        books = await service.read(compute)
        marked = [
            unrealized(book, marks.get(catalog.all_bots[bot_id].product_id))
            for bot_id, book in books
        ]
        unknown = any(amount is None for amount in marked)
        every = [position for _, book in books for position in book.positions]
        return Summary(
            mode=mode,
            bots=len(books),
            open_positions=sum(1 for _, book in books if book.current is not None),
            realized_pnl=sum((p.realized_pnl for p in every), Decimal(0)),
            unrealized_pnl=None if unknown else sum((a or Decimal(0) for a in marked), Decimal(0)),
            fees_paid=sum((p.fees_paid for p in every), Decimal(0)),
            unrealized_note=NO_MARK if unknown else None,
        )

    return api
