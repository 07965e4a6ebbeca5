"""``tranche ledger rebuild``: recompute every position from the stored fills and report where the
stored positions differ; ``apply`` stores (and publishes, through the outbox) the recomputed ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, Row
from sqlmodel import Session

from services.ledger.accounting import Allocation, Position
from services.ledger.booking import recompute
from services.ledger.positions import as_message, differences
from services.ledger.store import (
    bots_with_fills,
    fills_of,
    position_of,
    save_position,
)
from shared.bots import LiveCatalog
from shared.catalog import Catalog
from shared.contracts import Mode
from shared.money import utc_now


@dataclass(frozen=True)
class Difference:
    bot_id: str
    mode: Mode
    field: str
    stored: str
    recomputed: str


def mixed_products(rows: Sequence[Row], current: Position | None) -> str:
    """The products the open position's fills are of, when more than one (a fill booked into
    the wrong position before the ledger refused them); empty otherwise."""
    if current is None:
        return ""
    products = sorted({row.product_id for row in rows if row.time >= current.opened_at})
    return ", ".join(products) if len(products) > 1 else ""


def rebuild(
    engine: Engine,
    catalog: Catalog | LiveCatalog,
    allocation_of: dict[str, Allocation] | None,
    default_allocation: Allocation,
    apply: bool = False,
) -> list[Difference]:
    """Every difference between stored and recomputed positions, in both modes."""
    report: list[Difference] = []
    with Session(engine) as session:
        for mode in ("mock", "production"):
            for bot_id in bots_with_fills(session, mode):
                bot = catalog.all_bots.get(bot_id)
                if bot is None:
                    report.append(Difference(bot_id, mode, "bot", "unknown", "not configured"))
                    continue
                rows = fills_of(session, bot_id, mode)
                booked = recompute(
                    session,
                    bot_id=bot_id,
                    mode=mode,
                    product_id=bot.product_id,
                    product=catalog.products[bot.product_id],
                    allocation=(allocation_of or {}).get(bot_id)
                    or bot.exit_allocation
                    or default_allocation,
                    correlation_id=rows[-1].intent_id,
                    last_order_event_id=rows[-1].order_event_id,
                    products=catalog.products,
                )
                assert booked is not None
                mixed = mixed_products(rows, booked.book.current)
                if mixed:
                    report.append(
                        Difference(bot_id, mode, "product_id", mixed, "one product per position")
                    )
                stored = position_of(session, bot_id, mode)
                found = differences(stored, booked.position)
                report.extend(Difference(bot_id, mode, *item) for item in found)
                if found and apply:
                    # A new id: the corrected position must not be dropped as a duplicate of the
                    # stored one it replaces, nor a later revision at the same fill count as a
                    # duplicate of one told before the repair (it keeps the revision's number).
                    stamp = f"{utc_now():%Y%m%dT%H%M%S%f}"
                    revised = as_message(booked.position, stored)
                    repaired = revised.model_copy(
                        update={"message_id": f"{revised.message_id}-rebuilt-{stamp}"}
                    )
                    save_position(session, repaired)
        if apply:
            session.commit()
    return report
