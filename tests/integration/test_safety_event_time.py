"""Safety never wedges on a fill dated far ahead (issue 14, item 5): such a fill once became the
bot's last fill (its cooldown would run for a month) and raised OverflowError on a 9999 date.
It is dead-lettered with a reason; the real fill after it counts as before."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from shared.contracts import Fill
from shared.money import utc_now
from tests.integration.test_safety_service import (
    T0,
    Harness,
    intent,
    settings_for,
    started,
    stop,
    wait_until,
)


async def test_a_fill_dated_far_ahead_is_dead_lettered_and_the_real_one_counts(
    database_url: str, nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, nats_url, tmp_path, entry_cooldown_s=300)
    service = await started(settings)
    try:
        async with Harness(nats_url, database_url) as h:
            bot = "future"
            await h.send(intent(bot))
            (approval,) = await wait_until(lambda: h.approvals(bot), what="approval")
            ahead = utc_now() + timedelta(days=30)
            fake = Fill(trade_id="t-0", price=Decimal("0.09"), size=Decimal("0.05"),
                        fee=Decimal(0), time=ahead)  # fmt: skip
            await h.order_event(approval, "partially_filled", [fake], at=ahead)
            real = Fill(trade_id="t-1", price=Decimal("0.09"), size=Decimal("0.1"),
                        fee=Decimal(0), time=T0 + timedelta(minutes=3))  # fmt: skip
            await h.order_event(approval, "filled", [real], at=real.time)
            letters = await wait_until(
                lambda: h.stream("TRANCHE_DLQ", "tranche.dlq.safety"), what="a dead letter"
            )
            reasons = json.loads(letters[0].data)["reasons"]
            assert [reason["code"] for reason in reasons] == ["EVENT_TIME_AHEAD"]
            await h.put_position(bot, sequence=1, quantity="0.1", cost="0.009")
            await h.send(intent(bot, T0 + timedelta(minutes=6), action="add"))
            rows = await h.decided(2, bot)
            (cooldown,) = json.loads(rows[1].reasons)
            # Counted from the real fill: two minutes left, not a month.
            assert cooldown["code"] == "ENTRY_COOLDOWN" and "2m00s" in cooldown["message"]
    finally:
        await stop(service)
