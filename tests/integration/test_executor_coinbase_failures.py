"""The executor in production mode, in-process, against the Coinbase stand-in when the exchange
keeps failing: a revoked key and an order the exchange has lost. Every failure backs off, the
time-to-live cancel is asked on its own schedule whatever the polls return, and the number of
requests per order stays bounded. (SQLite only: the scheduling does not depend on the database.)"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import httpx

from services.executor.states import UNKNOWN_AT_EXCHANGE as UNKNOWN
from services.executor.store import OrderRow
from tests.support.coinbase_standin import ApiKey, CoinbaseStandIn
from tests.support.live_executor import PREFIX, Live, start_live, stop_live
from tests.support.waiting import eventually

WINDOW_S = 3.0
# With polls every 0.05 s doubling to 0.4 s, 3 s of failures need about 3 / 0.4 + 4 polls.
MOST_POLLS = 16


async def test_a_revoked_key_backs_off_and_the_ttl_cancel_goes_out_when_it_works_again(
    live: Live,
) -> None:
    cid = await live.approve(1, order_ttl_s=1)
    row = await live.resting(cid)
    path = f"{PREFIX}/orders/historical/{row.exchange_order_id}"
    before = live.requests("GET", path)
    live.standin.revoked = True
    await asyncio.sleep(WINDOW_S)  # the time-to-live (1 s) runs out while the key is refused
    polls = live.requests("GET", path) - before
    cancels = live.requests("POST", f"{PREFIX}/orders/batch_cancel")
    print(f"revoked key: {polls} get_order polls and {cancels} cancels in {WINDOW_S:g} s")
    assert polls <= MOST_POLLS, f"{polls} polls in {WINDOW_S} s with a revoked key"
    assert cancels >= 1, "the time-to-live cancel is asked even while polls fail"
    assert live.order(cid).cancel_code == "LIMIT_TTL"  # type: ignore[union-attr]
    live.standin.revoked = False

    async def cancelled() -> OrderRow | None:
        found = live.order(cid)
        return found if found is not None and found.status == "cancelled" else None

    done = await eventually(cancelled, timeout=10, what="cancelled once the key works again")
    assert done.cancel_code == "LIMIT_TTL"


async def test_an_order_the_exchange_lost_is_polled_with_back_off(live: Live) -> None:
    cid = await live.approve(2, order_ttl_s=1)
    row = await live.resting(cid)
    path = f"{PREFIX}/orders/historical/{row.exchange_order_id}"
    before = live.requests("GET", path)
    live.standin.lost.add(row.exchange_order_id)  # type: ignore[arg-type]
    await asyncio.sleep(WINDOW_S)
    polls = live.requests("GET", path) - before
    print(f"404s: {polls} get_order polls in {WINDOW_S:g} s")
    assert polls <= MOST_POLLS, f"{polls} polls in {WINDOW_S} s of 404 answers"


async def test_ready_says_when_the_exchange_refuses_the_key_and_reads_keep_working(
    standin: CoinbaseStandIn, key: ApiKey, nats_url: str, tmp_path: Path
) -> None:
    """Issue 17 item 5: /ready stayed 200 while the exchange refused the key."""
    live = await start_live(standin, key, nats_url, tmp_path, exchange_check_s=1)
    app = live.service.http_app()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://executor"
        ) as client:

            async def ready(expected: int) -> dict | None:
                answer = await client.get("/ready")
                return answer.json() if answer.status_code == expected else None

            fine = await eventually(lambda: ready(200), timeout=10, what="ready")
            assert fine["checks"]["exchange"] == "ok"
            standin.revoked = True
            refused = await eventually(lambda: ready(503), timeout=10, what="not ready")
            assert refused["checks"]["exchange"].startswith("failing: ExchangeNotReady: refused")
            assert "401" in refused["checks"]["exchange"]
            assert (await client.get("/orders")).status_code == 200  # reads keep working
            metrics = (await client.get("/metrics")).text
            assert 'tranche_executor_exchange_state{state="refused"} 1.0' in metrics
            standin.revoked = False
            await eventually(lambda: ready(200), timeout=10, what="ready again")
    finally:
        await stop_live(live)


async def test_an_order_the_exchange_lost_becomes_unknown_and_an_operator_settles_it(
    standin: CoinbaseStandIn, key: ApiKey, nats_url: str, tmp_path: Path
) -> None:
    """Issue 17 item 3: a 404 order never became final and blocked its bot for good, and no
    operator command could settle it."""
    live = await start_live(
        standin, key, nats_url, tmp_path, lost_order_grace_s=1, control_token="t0ken-for-test"
    )
    app = live.service.http_app()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://executor"
        ) as client:
            lost = await live.approve(5)
            other = await live.approve(6)
            row = await live.resting(lost)
            await live.resting(other)
            standin.lost.add(row.exchange_order_id)  # type: ignore[arg-type]

            async def unknown() -> OrderRow | None:
                found = live.order(lost)
                return found if found is not None and found.status == UNKNOWN else None

            marked = await eventually(unknown, timeout=10, what="marked unknown_at_exchange")
            assert marked.last_error and "tranche orders resolve c-5" in marked.last_error
            metrics = (await client.get("/metrics")).text
            assert "tranche_executor_orders_unknown_at_exchange 1.0" in metrics
            assert live.order(other).status == "open"  # type: ignore[union-attr]  # only this one
            listed = {o["client_order_id"]: o for o in (await client.get("/orders")).json()}
            assert listed[lost]["status"] == UNKNOWN

            body = {"as": "cancelled", "reason": "not on coinbase.com either", "operator": "ann"}
            path = f"/orders/{lost}/resolve"
            assert (await client.post(path, json=body)).status_code == 401  # no token
            auth = {"Authorization": "Bearer t0ken-for-test"}
            refused = await client.post(f"/orders/{other}/resolve", json=body, headers=auth)
            assert refused.status_code == 409 and "NOT_LOST" in refused.text
            bare = {"as": "filled", "reason": "no fill given", "operator": "ann"}
            nothing = await client.post(path, json=bare, headers=auth)
            assert nothing.status_code == 409 and "NO_FILL" in nothing.text  # none booked either
            settled = await client.post(path, json=body, headers=auth)
            assert settled.status_code == 200, settled.text
            again = await client.post(path, json=body, headers=auth)
            assert again.status_code == 409  # final stays final
            assert live.order(lost).status == "cancelled"  # type: ignore[union-attr]
            reason = live.reason(lost)
            assert reason == {
                "code": "OPERATOR_RESOLVED",
                "message": "resolved by ann as cancelled: not on coinbase.com either",
            }
            # The dashboard and the live view see it on the bus, with why.
            statuses = await eventually(
                lambda: _with_final(live, lost), timeout=10, what="the events on the stream"
            )
            assert statuses == [
                ("submitted", None), ("open", None),
                ("unknown_at_exchange", "UNKNOWN_AT_EXCHANGE"),
                ("cancelled", "OPERATOR_RESOLVED"),
            ]  # fmt: skip
            metrics = (await client.get("/metrics")).text
            assert "tranche_executor_orders_unknown_at_exchange 0.0" in metrics
    finally:
        await stop_live(live)


async def _with_final(live: Live, cid: str) -> list | None:
    found = await live.statuses(cid)
    return found if found and found[-1][0] == "cancelled" else None


async def test_fills_of_an_order_the_exchange_lost_are_found_in_list_fills_and_booked(
    standin: CoinbaseStandIn, key: ApiKey, nats_url: str, tmp_path: Path
) -> None:
    """Issue 17, "searched for in list-orders and list-fills": get_order answers 404, but the
    exchange's list of fills still holds what the order filled. Those fills are booked (the
    ledger and safety see them) while the order is marked unknown_at_exchange; a fill that turns
    up later is booked too. An operator then settles it as filled with no fill to add."""
    live = await start_live(
        standin, key, nats_url, tmp_path, lost_order_grace_s=1, control_token="t0ken-for-test"
    )
    try:
        lost = await live.approve(7)
        row = await live.resting(lost)
        exchange_id: str = row.exchange_order_id  # type: ignore[assignment]
        standin.lost.add(exchange_id)
        standin.fill(exchange_id, "0.004")  # get_order never shows it: only list-fills does

        async def unknown_with_fill() -> OrderRow | None:
            found = live.order(lost)
            ok = found is not None and found.status == UNKNOWN and found.filled_size > 0
            return found if ok else None

        marked = await eventually(unknown_with_fill, timeout=10, what="unknown, its fill booked")
        assert marked.filled_size == Decimal("0.004")
        fills = f"{PREFIX}/orders/historical/fills"
        assert live.requests("GET", fills) >= 1

        standin.fill(exchange_id, "0.002")  # more of it fills while it is lost

        async def both_fills() -> OrderRow | None:
            found = live.order(lost)
            ok = found is not None and found.filled_size == Decimal("0.006")
            return found if ok and found.status == UNKNOWN else None  # still lost: resolved by hand

        await eventually(both_fills, timeout=10, what="the later fill booked, still lost")

        async def published() -> list[tuple[str, str | None]] | None:
            # The row changes in the transaction that stages its event; the outbox relay
            # publishes the event after it: wait for the stream, not the table.
            found = await live.statuses(lost)
            return found if found and found[-1][0] == "unknown_at_exchange" else None

        statuses = await eventually(published, timeout=10, what="the unknown event published")
        assert statuses[:2] == [("submitted", None), ("open", None)]
        assert ("partially_filled", None) in statuses
        assert statuses[-1] == ("unknown_at_exchange", "UNKNOWN_AT_EXCHANGE")

        body = {"as": "filled", "reason": "both fills are in the list", "operator": "ann"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=live.service.http_app()), base_url="http://x"
        ) as client:
            settled = await client.post(
                f"/orders/{lost}/resolve", json=body,
                headers={"Authorization": "Bearer t0ken-for-test"},
            )  # fmt: skip
        assert settled.status_code == 200, settled.text
        done = live.order(lost)
        assert done is not None and done.status == "filled"
        assert done.filled_size == Decimal("0.006"), "no fill added by hand"
    finally:
        await stop_live(live)
