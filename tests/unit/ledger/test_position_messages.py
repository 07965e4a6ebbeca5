"""The id a position message goes out with (``as_message``): a position whose books changed at
the same fill count gets an id of its own, or the outbox and the stream would drop it as a
repeat and every reader would keep the stale books."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.ledger.positions import as_message, differences
from shared.contracts import PositionUpdate

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def flat(message_id: str, realized: str, sequence: int = 3, **extra: object) -> PositionUpdate:
    return PositionUpdate(
        message_id=message_id, correlation_id=str(extra.pop("correlation_id", "intent-9")),
        time=T0, bot_id="b-1", product_id="ETH-BTC", mode="mock", position_id=None,
        status="flat", quantity=Decimal(0), average_entry_price=None, break_even_price=None,
        cost_basis=Decimal(0), realized_pnl=Decimal(0), fees_paid=Decimal(0), tranches=[],
        sequence=sequence, realized_pnl_total=Decimal(realized), **extra,  # type: ignore[arg-type]
    )  # fmt: skip


BASE = "position-mock-b-1-3"


def test_the_first_position_and_a_new_fill_count_keep_their_own_ids() -> None:
    assert as_message(flat(BASE, "2"), None).message_id == BASE
    newer = flat("position-mock-b-1-4", "5", sequence=4)
    assert as_message(newer, flat(BASE, "2")) == newer


@pytest.mark.parametrize(
    ("stored", "revision"),
    [
        (BASE, f"{BASE}-r1"),
        (f"{BASE}-r1", f"{BASE}-r2"),
        (f"{BASE}-r9", f"{BASE}-r10"),
        # repaired by `tranche ledger rebuild --apply`, then revised again
        (f"{BASE}-rebuilt-20261201T101010000000", f"{BASE}-r1"),
        (f"{BASE}-r2-rebuilt-20261201T101010000000", f"{BASE}-r3"),
        (f"{BASE}-r2-rebuilt-20261201T101010000000-r3", f"{BASE}-r4"),
    ],
)
def test_other_books_at_the_same_fill_count_are_a_revision(stored: str, revision: str) -> None:
    fresh = as_message(flat(BASE, "2"), flat(stored, "-3"))
    assert fresh.message_id == revision
    assert fresh.realized_pnl_total == 2 and fresh.correlation_id == "intent-9"


def test_a_revision_without_a_correlation_of_its_own_correlates_with_itself() -> None:
    fresh = as_message(flat(BASE, "2", correlation_id=BASE), flat(BASE, "-3"))
    assert fresh.message_id == fresh.correlation_id == f"{BASE}-r1"


def test_the_same_books_again_are_the_stored_message_nothing_new() -> None:
    stored = flat(f"{BASE}-r1", "2", last_order_event_id="e-1")
    again = flat(BASE, "2", last_order_event_id="e-2")  # bookkeeping differs, the books do not
    assert differences(stored, again) == []
    assert as_message(again, stored) is stored


@pytest.mark.parametrize(
    "stored",
    [
        "position-mock-b-1-13",  # another count that starts with the same digits
        f"{BASE}-x1",  # the same fill count with an exit finished: another message
        "position-production-b-1-3",
    ],
)
def test_ids_that_only_start_alike_are_not_the_same_message(stored: str) -> None:
    fresh = flat(BASE, "2")
    assert as_message(fresh, flat(stored, "-3")) == fresh
