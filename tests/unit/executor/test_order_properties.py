"""Properties of the order state machine over any sequence of exchange reports (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from services.executor.orders import (
    NEW,
    ExchangeReport,
    OrderIdentity,
    OrderState,
    advance,
    is_final,
)
from services.executor.states import COINBASE_STATUSES, PARTIALLY_FILLED, Refusal, transition
from shared.contracts import Fill

NOW = datetime(2018, 1, 20, tzinfo=UTC)
ORDER = OrderIdentity("bot-1", "ETH-BTC", "mock", "i-1", "c-1", "entry", "buy")
FILLS = [
    Fill(
        trade_id=f"t-{n}",
        price=Decimal("0.09"),
        size=Decimal("0.01") * n,
        fee=Decimal("0.0001"),
        time=NOW + timedelta(seconds=n),
    )
    for n in range(1, 7)
]


@st.composite
def report_sequences(draw):
    """Reports as an exchange sends them: fills only ever grow; any status, in any order."""
    length = draw(st.integers(1, 12))
    revealed = sorted(draw(st.lists(st.integers(0, len(FILLS)), min_size=length, max_size=length)))
    reports = []
    for shown in revealed:
        status = draw(st.sampled_from([*COINBASE_STATUSES, "SOMETHING_NEW"]))
        counted = draw(st.sampled_from([None, shown, min(shown + 1, len(FILLS))]))
        reports.append(ExchangeReport("x-1", status, tuple(FILLS[:shown]), number_of_fills=counted))
    return reports


@settings(max_examples=400, deadline=None)
@given(report_sequences())
def test_statuses_only_move_forward_and_every_fill_is_published_exactly_once(reports) -> None:
    state = OrderState(NEW)
    published_ids: list[str] = []
    published_fills: list[str] = []
    for report in reports:
        was_final = is_final(state.status)
        step = advance(ORDER, state, report, NOW)
        allowed = transition(state.status, report.status)
        # Only what the table allows, or staying (a refusal, fills still missing), or
        # partially_filled (fills on an order that is not final).
        assert step.status in (allowed, state.status, PARTIALLY_FILLED)
        assert (step.alert is not None) == (isinstance(allowed, Refusal) and allowed.alert)
        if was_final:
            assert step.events == [] and step.status == state.status
        for event in step.events:
            published_ids.append(event.message_id)
            published_fills.extend(fill.trade_id for fill in event.fills)
            assert event.filled_size == sum(
                (f.size for f in FILLS if f.trade_id in published_fills), Decimal(0)
            )
        state = OrderState(step.status, step.fills, "x-1")
    assert len(published_ids) == len(set(published_ids))
    assert published_fills == [fill.trade_id for fill in state.known_fills]
    last = reports[-1]
    mapped = transition(state.status if was_final else NEW, last.status)
    everything_known = last.number_of_fills is None or last.number_of_fills <= len(last.fills)
    if isinstance(mapped, str) and is_final(mapped) and everything_known and not was_final:
        assert state.status == mapped  # never left pending while the exchange says final
