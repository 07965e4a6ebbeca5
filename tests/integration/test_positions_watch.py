"""The positions bucket watch (signal and safety follow it) never silently stops following."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import nats

from shared import subjects
from shared.contracts import PositionUpdate
from shared.positions import watch_positions
from shared.streams import ensure_streams
from tests.support.waiting import eventually

T0 = datetime(2018, 1, 20, tzinfo=UTC)


def position(bot: str, sequence: int) -> bytes:
    return PositionUpdate(
        message_id=f"p-{bot}-{sequence}", correlation_id="c", time=T0, bot_id=bot,
        product_id="ETH-BTC", mode="mock", position_id=None, status="flat",
        quantity=Decimal(0), average_entry_price=None, break_even_price=None,
        cost_basis=Decimal(0), realized_pnl=Decimal(0), fees_paid=Decimal(0), tranches=[],
        sequence=sequence,
    ).model_dump_json().encode()  # fmt: skip


async def test_a_failing_watch_starts_again_and_misses_no_update(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await ensure_streams(nc.jetstream())
        kv = await nc.jetstream().key_value(subjects.POSITIONS_BUCKET)
        await kv.put("bot-1", position("bot-1", 1))
        seen: list[tuple[str, int]] = []
        failures = [RuntimeError("the store is away")]

        async def on_position(update: PositionUpdate) -> None:
            if failures:
                raise failures.pop()  # the first delivery fails, as a store outage would
            seen.append((update.bot_id, update.sequence))

        follower = asyncio.create_task(watch_positions(nc, on_position, retry_s=0.05))
        try:
            await eventually(lambda: ("bot-1", 1) in seen, "the first position, offered again")
            await kv.put("bot-2", position("bot-2", 1))
            await eventually(lambda: ("bot-2", 1) in seen, "an update after the failure")
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
    finally:
        await nc.close()
