"""Bots managed at run time, on a real NATS server: the file seeds the ``tranche_bots`` bucket, the
HTTP API creates, changes, pauses, resumes and removes bots (token-guarded, validated, with
optimistic concurrency), every change is announced on ``tranche.bots.changed``, and the running
signal service applies it at once (a created bot trades, a paused one does not buy, a removed one
stops). A restart keeps run-time changes: the bucket wins over the file."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import httpx
import nats
import pytest
from nats.js.errors import NotFoundError
from pydantic import BaseModel

from services.signal.app import build
from services.signal.config import SignalSettings
from shared import subjects
from shared.bots import BotRecord, LiveCatalog, read_bucket
from shared.catalog import Bot, load_catalog
from shared.contracts import (
    BotChanged,
    BotReadiness,
    DeadLetter,
    OrderEvent,
    OrderRejected,
    PositionUpdate,
    Reason,
    SafetyEvent,
    Ticker,
    TradeIntent,
)
from shared.money import utc_now
from shared.service import Service
from shared.streams import BOTS, DLQ, INTENTS, ensure_streams
from tests.support.signing import signed, signed_by_executor
from tests.support.waiting import eventually

T = TypeVar("T", bound=BaseModel)
TOKEN = "bots-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "X-Tranche-Operator": "alice"}
_signals = itertools.count()

CONFIG = """
[products.ETH-BTC]
base_min_size = "0.001"
base_increment = "0.00000001"
quote_increment = "0.00000001"
quote_min_size = "0.0001"

[bots.from-file]
product_id = "ETH-BTC"
quote_size = "0.01"
"""

# No signals of its own: it trades injected signals, confirmed after one evaluation.
QUICK = {"product_id": "ETH-BTC", "quote_size": "0.02", "confirm_evaluations": 1,
         "confirm_seconds": 0}  # fmt: skip


def settings_for(tmp_path: Path, nats_url: str, **overrides: object) -> SignalSettings:
    config = tmp_path / "bots.toml"
    if not config.exists():
        config.write_text(CONFIG)
    base = {
        "database_url": f"sqlite:///{tmp_path / 'signal.db'}",
        "nats_url": nats_url,
        "data_dir": tmp_path,
        "config_file": config,
        "outbox_poll_s": 0.2,
        "control_token": TOKEN,
    }
    return SignalSettings(**(base | overrides))


@asynccontextmanager
async def running(settings: SignalSettings) -> AsyncIterator[tuple[Service, httpx.AsyncClient]]:
    service = build(settings)
    await service.start()
    transport = httpx.ASGITransport(app=service.http_app())
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://signal") as web:
            yield service, web
    finally:
        await service.stop()


@pytest.fixture
async def js(nats_url: str):
    nc = await nats.connect(nats_url)
    await ensure_streams(nc.jetstream())
    yield nc.jetstream()
    await nc.close()


async def inject(js, bot_id: str, side: str = "buy") -> str:
    message_id = f"sig-{bot_id}-{next(_signals)}"
    body = {"side": side, "temperature": 90, "message_id": message_id}
    await js.publish(
        subjects.for_token(subjects.SIGNALS_INJECT, bot_id),
        json.dumps(body).encode(),
        headers={"Nats-Msg-Id": message_id},
    )
    return message_id


async def stored(js, stream: str, subject: str, model: type[T]) -> list[T]:
    """Every message a stream holds on ``subject``, in order."""
    info = await js.stream_info(stream, subjects_filter=subject)
    if not (info.state.subjects or {}).get(subject):
        return []
    sub = await js.subscribe(subject, ordered_consumer=True, stream=stream)
    found = []
    try:
        while True:
            msg = await sub.next_msg(timeout=2)
            found.append(model.model_validate_json(msg.data))
            if msg.metadata.num_pending == 0:
                return found
    finally:
        await sub.unsubscribe()


async def intents_of(js, bot_id: str) -> list[TradeIntent]:
    subject = subjects.for_token(subjects.INTENTS, bot_id)
    return await stored(js, INTENTS.name, subject, TradeIntent)


async def announcements(js) -> list[BotChanged]:
    return await stored(js, BOTS.name, subjects.BOTS_CHANGED, BotChanged)


async def test_the_file_seeds_the_bucket_and_the_seed_is_announced(
    tmp_path: Path, nats_url: str, js
) -> None:
    async with running(settings_for(tmp_path, nats_url)) as (_, web):
        listed = (await web.get("/bots")).json()
        assert [(b["bot_id"], b["status"], b["change"]) for b in listed] == [
            ("from-file", "active", "created")
        ]
        assert listed[0]["revision"] >= 1 and listed[0]["changed_by"] == "bots file"
        held = await read_bucket(js._nc)
        assert set(held) == {"from-file"}
        seen = await eventually(lambda: announcements(js), "the seed announcement")
        assert [(a.bot_id, a.change, a.revision) for a in seen] == [
            ("from-file", "created", listed[0]["revision"])
        ]


async def test_reads_are_open_and_writes_need_the_operators_token(
    tmp_path: Path, nats_url: str, js
) -> None:
    new = {"bot_id": "quick", "config": QUICK}
    async with running(settings_for(tmp_path, nats_url)) as (_, web):
        assert (await web.get("/bots/from-file")).status_code == 200
        assert (await web.post("/bots", json=new)).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await web.post("/bots", json=new, headers=wrong)).status_code == 401
        assert (await web.post("/bots/from-file/pause", headers=wrong)).status_code == 401
        assert (await web.delete("/bots/from-file")).status_code == 401
        assert (await web.get("/bots/from-file")).json()["status"] == "active"
    async with running(settings_for(tmp_path, nats_url, control_token=None)) as (_, web):
        refused = await web.post("/bots", json=new, headers=AUTH)
        assert refused.status_code == 403 and "TRANCHE_CONTROL_TOKEN" in refused.text
    assert set(await read_bucket(js._nc)) == {"from-file"}


@pytest.mark.parametrize(
    ("config", "status", "words"),
    [
        (QUICK | {"product_id": "DOGE-USD"}, 422, "DOGE-USD, which is not a product"),
        (QUICK | {"signals": [{"name": "astrology"}]}, 422, "astrology"),
        (QUICK | {"quote_size": "-1"}, 422, "quote_size"),
        (QUICK | {"buy_threshold": "2"}, 422, "buy_threshold"),
        (QUICK | {"leverage": 10}, 422, "leverage"),
    ],
)
async def test_a_bad_bot_is_refused_with_the_reason_and_nothing_is_stored(
    tmp_path: Path, nats_url: str, js, config: dict, status: int, words: str
) -> None:
    async with running(settings_for(tmp_path, nats_url)) as (_, web):
        answer = await web.post("/bots", json={"bot_id": "bad", "config": config}, headers=AUTH)
        assert answer.status_code == status
        assert words in answer.text
        assert (await web.get("/bots/bad")).status_code == 404
    assert "bad" not in await read_bucket(js._nc)


async def test_create_twice_conflicts_and_a_stale_revision_cannot_overwrite(
    tmp_path: Path, nats_url: str, js
) -> None:
    async with running(settings_for(tmp_path, nats_url)) as (_, web):
        created = await web.post("/bots", json={"bot_id": "quick", "config": QUICK}, headers=AUTH)
        assert created.status_code == 201
        again = await web.post("/bots", json={"bot_id": "quick", "config": QUICK}, headers=AUTH)
        assert again.status_code == 409 and again.json()["detail"]["code"] == "BOT_EXISTS"
        read = await web.get("/bots/quick")
        etag = read.headers["ETag"]
        first = await web.put(
            "/bots/quick", json=QUICK | {"quote_size": "0.03"}, headers=AUTH | {"If-Match": etag}
        )
        assert first.status_code == 200 and first.json()["config"]["quote_size"] == "0.03"
        assert first.json()["revision"] > read.json()["revision"]
        late = await web.put(
            "/bots/quick", json=QUICK | {"quote_size": "0.05"}, headers=AUTH | {"If-Match": etag}
        )
        assert late.status_code == 409 and "read it again" in late.json()["detail"]["message"]
        assert (await web.get("/bots/quick")).json()["config"]["quote_size"] == "0.03"
        missing = await web.put("/bots/ghost", json=QUICK, headers=AUTH)
        assert missing.status_code == 404


async def evaluations(nc, bot_id: str) -> asyncio.Queue:
    queue: asyncio.Queue = asyncio.Queue()

    async def keep(msg) -> None:
        await queue.put(json.loads(msg.data))

    await nc.subscribe(subjects.for_token(subjects.SIGNALS_EVALUATED, bot_id), cb=keep)
    return queue


async def test_a_bot_created_at_run_time_trades_paused_does_not_buy_and_removed_stops(
    tmp_path: Path, nats_url: str, js
) -> None:
    nc = js._nc
    async with running(settings_for(tmp_path, nats_url)) as (_, web):
        created = await web.post("/bots", json={"bot_id": "quick", "config": QUICK}, headers=AUTH)
        assert created.status_code == 201 and created.json()["evaluating"] is True
        seen = await evaluations(nc, "quick")

        await inject(js, "quick")
        (entry,) = await eventually(lambda: intents_of(js, "quick"), "the new bot's intent")
        assert entry.action == "entry" and entry.quote_size == Decimal("0.02")

        paused = await web.post("/bots/quick/pause", headers=AUTH)
        assert paused.status_code == 200 and paused.json()["status"] == "paused"
        again = await web.post("/bots/quick/pause", headers=AUTH)
        assert again.json()["revision"] == paused.json()["revision"]  # no change, no write
        while not seen.empty():
            seen.get_nowait()
        await inject(js, "quick")
        evaluation = await asyncio.wait_for(seen.get(), 10)
        assert evaluation["reason"]["code"] == "CONFIRMED" and evaluation["intent_id"] is None
        assert len(await intents_of(js, "quick")) == 1

        resumed = await web.post("/bots/quick/resume", headers=AUTH)
        assert resumed.json()["status"] == "active"
        await inject(js, "quick")
        await eventually(
            lambda: _count_at_least(js, "quick", 2), "an intent again after the resume"
        )

        removed = await web.delete("/bots/quick", headers=AUTH)
        assert removed.status_code == 200 and removed.json()["status"] == "removed"
        assert (await web.get("/bots/quick")).status_code == 404
        assert "quick" not in [b["bot_id"] for b in (await web.get("/bots")).json()]
        await inject(js, "quick")
        letter = await eventually(lambda: _dead_letter(js), "the removed bot's signal refused")
        assert "UNKNOWN_BOT" in letter
        assert len(await intents_of(js, "quick")) == 2

    changes = [(a.bot_id, a.change, a.status, a.changed_by) for a in await announcements(js)]
    assert changes == [
        ("from-file", "created", "active", "bots file"),
        ("quick", "created", "active", "alice"),
        ("quick", "paused", "paused", "alice"),
        ("quick", "resumed", "active", "alice"),
        ("quick", "removed", "removed", "alice"),
    ]


async def _count_at_least(js, bot_id: str, count: int) -> bool:
    return len(await intents_of(js, bot_id)) >= count


async def _dead_letter(js) -> str | None:
    try:
        msg = await js.get_last_msg("TRANCHE_DLQ", subjects.for_token(subjects.DLQ, "signal"))
    except NotFoundError:
        return None
    return msg.data.decode()


async def test_a_changed_bot_restarts_its_confirmation_from_nothing(
    tmp_path: Path, nats_url: str, js
) -> None:
    slow = QUICK | {"confirm_evaluations": 3}
    async with running(settings_for(tmp_path, nats_url)) as (_, web):
        await web.post("/bots", json={"bot_id": "slow", "config": slow}, headers=AUTH)
        seen = await evaluations(js._nc, "slow")
        await inject(js, "slow")
        await inject(js, "slow")
        progress = [(await asyncio.wait_for(seen.get(), 10))["confirmations"] for _ in range(2)]
        assert progress == [1, 2]
        changed = await web.put("/bots/slow", json=slow | {"quote_size": "0.03"}, headers=AUTH)
        assert changed.status_code == 200
        await inject(js, "slow")
        assert (await asyncio.wait_for(seen.get(), 10))["confirmations"] == 1
        assert await intents_of(js, "slow") == []


async def put_open_position(
    js,
    bot_id: str,
    status: str = "open",
    sequence: int = 1,
    position_id: str = "pos-1",
    at: datetime | None = None,
) -> None:
    """The ledger's position of the bot in the bucket (``flat``: sold, nothing held): 0.1 at
    0.05, ``at`` (now) its time."""
    held = status == "open"
    position = PositionUpdate(
        message_id=f"p-{bot_id}-{sequence}", correlation_id="c", time=at or utc_now(),
        bot_id=bot_id, product_id="ETH-BTC", mode="mock",
        position_id=position_id if held else None, status=status,
        quantity=Decimal("0.1") if held else Decimal(0),
        average_entry_price=Decimal("0.05") if held else None,
        break_even_price=Decimal("0.05") if held else None,
        cost_basis=Decimal("0.005") if held else Decimal(0), realized_pnl=Decimal(0),
        fees_paid=Decimal(0), tranches=[], sequence=sequence,
    )  # fmt: skip
    bucket = await js.key_value(subjects.POSITIONS_BUCKET)
    await bucket.put(bot_id, position.model_dump_json().encode())


async def test_a_bot_holding_a_position_cannot_be_removed_but_can_be_paused(
    tmp_path: Path, nats_url: str, js
) -> None:
    await put_open_position(js, "from-file")
    async with running(settings_for(tmp_path, nats_url)) as (_, web):
        await eventually(
            lambda: _position_is(web, "from-file", "open"), "the position read from the bucket"
        )
        refused = await web.delete("/bots/from-file", headers=AUTH)
        assert refused.status_code == 409
        assert refused.json()["detail"]["code"] == "POSITION_OPEN"
        assert "holds 0.1 ETH-BTC" in refused.json()["detail"]["message"]
        assert (await web.post("/bots/from-file/pause", headers=AUTH)).status_code == 200
    assert (await read_bucket(js._nc))["from-file"][0].status == "paused"


async def publish_readiness(js, bot_id: str, orders_in_flight: int) -> None:
    readiness = BotReadiness(
        bot_id=bot_id, mode="mock", time=utc_now(), trading_state="active", can_enter=False,
        can_exit=False, max_tranches=3, orders_in_flight=orders_in_flight,
    )  # fmt: skip
    await js._nc.publish(
        subjects.for_token(subjects.SAFETY_READINESS, bot_id), readiness.model_dump_json().encode()
    )
    await js._nc.flush()


async def test_a_bot_with_an_order_in_flight_is_not_removed_until_it_is_final(
    tmp_path: Path, nats_url: str, js
) -> None:
    # Issue 15, reproduced 6: removal during an approved entry left an unprotected position.
    async with running(settings_for(tmp_path, nats_url)) as (service, web):

        async def heard() -> bool:
            # core NATS: said again until the signal has heard it (a removal asked before that
            # is rightly accepted, and the bot would be gone)
            await publish_readiness(js, "from-file", 1)
            return service.in_flight.why_not_removable("from-file") is not None

        await eventually(heard, "safety's readiness heard")
        answer = await web.delete("/bots/from-file", headers=AUTH)
        assert answer.status_code == 409, answer.text
        assert answer.json()["detail"]["code"] == "ORDER_IN_FLIGHT"
        assert "1 order(s) in flight" in answer.json()["detail"]["message"]
        await publish_readiness(js, "from-file", 0)

        async def removed() -> bool:
            return (await web.delete("/bots/from-file", headers=AUTH)).status_code == 200

        await eventually(removed, "the removal once the order is final")


async def _position_is(web: httpx.AsyncClient, bot_id: str, status: str) -> bool:
    return (await web.get(f"/bots/{bot_id}")).json()["position"] == status


async def test_after_a_restart_the_bucket_wins_over_the_file_unless_reseeded(
    tmp_path: Path, nats_url: str, js, database_url: str
) -> None:
    settings = settings_for(tmp_path, nats_url, database_url=database_url)
    async with running(settings) as (_, web):
        assert (await web.delete("/bots/from-file", headers=AUTH)).status_code == 200
        await web.post("/bots", json={"bot_id": "quick", "config": QUICK}, headers=AUTH)
    async with running(settings) as (_, web):
        assert [b["bot_id"] for b in (await web.get("/bots")).json()] == ["quick"]
        assert (await web.get("/bots/from-file")).status_code == 404
    reseeding = settings_for(tmp_path, nats_url, database_url=database_url, bots_reseed=True)
    async with running(reseeding) as (_, web):
        listed = {b["bot_id"]: b for b in (await web.get("/bots")).json()}
        assert set(listed) == {"from-file", "quick"}
        assert listed["from-file"]["changed_by"] == "bots file"
    changes = [(a.bot_id, a.change) for a in await announcements(js)]
    assert changes == [
        ("from-file", "created"),
        ("from-file", "removed"),
        ("quick", "created"),
        ("from-file", "created"),
    ]


async def test_other_services_see_bots_created_paused_and_removed_at_run_time(
    tmp_path: Path, nats_url: str, js
) -> None:
    live = LiveCatalog(load_catalog(settings_for(tmp_path, nats_url).config_file))
    assert set(live.bots) == {"from-file"}  # the file's, before the bucket is read
    follower = asyncio.create_task(live.follow(js._nc))
    try:
        async with running(settings_for(tmp_path, nats_url)) as (_, web):
            await web.post("/bots", json={"bot_id": "quick", "config": QUICK}, headers=AUTH)
            await eventually(_true(lambda: "quick" in live.bots), "the new bot seen elsewhere")
            assert live.state("quick").revision is not None
            await web.post("/bots/quick/pause", headers=AUTH)
            await eventually(_true(lambda: live.state("quick").paused), "the pause seen")
            await web.delete("/bots/quick", headers=AUTH)
            await eventually(_true(lambda: "quick" not in live.bots), "the removal seen")
            # A removed bot's fills stay reportable: the ledger still knows its product.
            assert live.all_bots["quick"].product_id == "ETH-BTC"
    finally:
        follower.cancel()


def _true(condition):
    async def probe() -> bool:
        return condition()

    return probe


async def test_a_removed_bot_can_be_created_again_under_its_name(
    tmp_path: Path, nats_url: str, js
) -> None:
    async with running(settings_for(tmp_path, nats_url)) as (_, web):
        gone = await web.delete("/bots/from-file", headers=AUTH)
        again = await web.post("/bots", json={"bot_id": "from-file", "config": QUICK}, headers=AUTH)
        assert again.status_code == 201
        assert again.json()["revision"] > gone.json()["revision"]
        assert again.json()["config"]["quote_size"] == "0.02" and again.json()["evaluating"]
        await inject(js, "from-file")
        await eventually(lambda: intents_of(js, "from-file"), "the re-created bot trading")


async def test_a_change_whose_announcement_was_lost_is_announced_on_the_next_start(
    tmp_path: Path, nats_url: str, js, database_url: str
) -> None:
    settings = settings_for(tmp_path, nats_url, database_url=database_url)
    async with running(settings):
        pass
    # As if the signal service died between the bucket write and the outbox commit:
    bucket = await js.key_value(subjects.BOTS_BUCKET)
    record = BotRecord(
        bot_id="orphan", config=Bot.model_validate(QUICK), change="created",
        changed_at=utc_now(), changed_by="alice",
    )  # fmt: skip
    revision = await bucket.create("orphan", record.model_dump_json().encode())
    async with running(settings) as (_, web):
        assert (await web.get("/bots/orphan")).json()["revision"] == revision
        await eventually(
            lambda: _announced(js, ("orphan", "created", revision)), "the lost announcement"
        )
    async with running(settings):
        pass
    changes = [(a.bot_id, a.change, a.revision) for a in await announcements(js)]
    assert changes.count(("orphan", "created", revision)) == 1  # not again on the next start
    assert len(changes) == 2


async def _announced(js, change: tuple[str, str, int]) -> bool:
    return change in [(a.bot_id, a.change, a.revision) for a in await announcements(js)]


async def test_a_follower_that_starts_before_the_bucket_exists_keeps_trying(
    tmp_path: Path, nats_url: str
) -> None:
    nc = await nats.connect(nats_url)
    live = LiveCatalog(load_catalog(settings_for(tmp_path, nats_url).config_file))
    follower = asyncio.create_task(live.follow(nc, retry_s=0.1))
    try:
        await asyncio.sleep(0.3)  # the bucket does not exist yet: the watch fails, and retries
        await ensure_streams(nc.jetstream())
        bucket = await nc.jetstream().key_value(subjects.BOTS_BUCKET)
        record = BotRecord(
            bot_id="late", config=Bot.model_validate(QUICK), change="created",
            changed_at=utc_now(), changed_by="alice",
        )  # fmt: skip
        await bucket.create("late", record.model_dump_json().encode())
        await eventually(_true(lambda: "late" in live.bots), "the bot seen after the retry")
        assert not follower.done()
    finally:
        follower.cancel()
        await nc.close()


STOPPED = """
[bots.stopped]
product_id = "ETH-BTC"
quote_size = "0.01"
stop_loss_pct = "2"
stop_on_exchange = true
"""


async def test_a_flat_bot_whose_stop_still_rests_on_the_exchange_is_not_removed_until_cancelled(
    tmp_path: Path, nats_url: str, js
) -> None:
    """Removing it would leave a sell resting at the exchange that nobody follows any more."""
    (tmp_path / "bots.toml").write_text(CONFIG + STOPPED)
    await put_open_position(js, "stopped")
    async with running(settings_for(tmp_path, nats_url)) as (_, web):
        stop = await stop_asked(js, web)
        await publish_stop_event(js, stop, "open")
        await put_open_position(js, "stopped", status="flat", sequence=2)
        await eventually(lambda: _position_is(web, "stopped", "flat"), "the flat position")

        async def refused() -> httpx.Response | None:
            answer = await web.delete("/bots/stopped", headers=AUTH)
            return answer if answer.status_code == 409 else None

        answer = await eventually(refused, "the removal refused while the stop rests")
        assert answer.json()["detail"]["code"] == "STOP_ON_EXCHANGE"
        assert "--cancel-stops" in answer.json()["detail"]["message"]
        await publish_stop_event(js, stop, "cancelled")

        async def removed() -> bool:
            return (await web.delete("/bots/stopped", headers=AUTH)).status_code == 200

        await eventually(removed, "the removal once the stop is cancelled")


async def test_a_stop_event_unsigned_or_on_another_bots_subject_is_refused(
    tmp_path: Path, nats_url: str, js
) -> None:
    """Neither an unsigned "open" nor the executor's "open" for this bot on another bot's
    subject makes the signal believe the stop rests on the exchange (the handler checks the
    message it takes from FastStream's context): the flat bot is removed."""
    (tmp_path / "bots.toml").write_text(CONFIG + STOPPED)
    await put_open_position(js, "stopped")
    async with running(settings_for(tmp_path, nats_url)) as (_, web):
        stop = await stop_asked(js, web)
        await publish_stop_event(js, stop, "open", signed=False)
        await publish_stop_event(js, stop, "open", subject_bot="another-bot")

        codes = await eventually(lambda: dead_letter_codes(js, 2), "both events refused")
        assert sorted(codes) == ["ORDER_EVENT_NOT_SIGNED", "SUBJECT_MISMATCH"]
        await put_open_position(js, "stopped", status="flat", sequence=2)
        await eventually(lambda: _position_is(web, "stopped", "flat"), "the flat position")
        assert (await web.delete("/bots/stopped", headers=AUTH)).status_code == 200


async def dead_letter_codes(js, count: int) -> list[str] | None:
    """The codes of the signal's dead letters, once there are ``count``."""
    letters = await stored(js, DLQ.name, "tranche.dlq.signal", DeadLetter)
    codes = [reason.code for letter in letters for reason in letter.reasons]
    return codes if len(codes) == count else None


async def stop_asked(js, web: httpx.AsyncClient) -> TradeIntent:
    """The "stopped" bot's open position seen, a price, and the stop the signal asks for."""
    await eventually(lambda: _position_is(web, "stopped", "open"), "the open position")
    tick = Ticker(product_id="ETH-BTC", price=Decimal("0.05"), time=utc_now())
    await js._nc.publish("tranche.market.ticker.ETH-BTC", tick.model_dump_json().encode())
    (stop,) = await eventually(
        lambda: stop_intents(js, "stopped"), "the stop asked for the position"
    )
    return stop


async def stop_intents(js, bot_id: str) -> list[TradeIntent]:
    found = await stored(js, INTENTS.name, f"tranche.intents.{bot_id}", TradeIntent)
    return [intent for intent in found if intent.order_type == "stop_limit"]


async def publish_stop_event(
    js, stop: TradeIntent, status: str, *, signed: bool = True, subject_bot: str | None = None
) -> None:
    """As the executor publishes it; ``signed=False`` or another bot's subject as anyone else."""
    event = OrderEvent(
        message_id=f"e-{stop.intent_id}-{status}", correlation_id=stop.intent_id, time=utc_now(),
        bot_id=stop.bot_id, product_id="ETH-BTC", mode="mock", intent_id=stop.intent_id,
        client_order_id=f"c-{stop.intent_id}", action="exit", side="sell", status=status,
    )  # fmt: skip
    subject = subjects.for_token(subjects.ORDERS_EVENTS, subject_bot or stop.bot_id)
    payload = event.model_dump_json().encode()
    await js.publish(
        subject, payload, headers=signed_by_executor(subject, payload) if signed else None
    )


async def test_only_a_flatten_request_safety_signed_has_the_signal_sell(
    tmp_path: Path, nats_url: str, js
) -> None:
    """A forged flatten request (a stolen password, a consumer's deliver subject, a permissions
    mistake) would have the signal sell the bot's position: it acts only on safety's signature."""
    await put_open_position(js, "from-file")
    async with running(settings_for(tmp_path, nats_url)) as (_, web):
        await eventually(lambda: _position_is(web, "from-file", "open"), "the open position")
        tick = Ticker(product_id="ETH-BTC", price=Decimal("0.05"), time=utc_now())
        await js._nc.publish("tranche.market.ticker.ETH-BTC", tick.model_dump_json().encode())

        async def flatten(message_id: str, sign: bool) -> None:
            event = SafetyEvent(
                message_id=message_id, correlation_id=message_id, time=utc_now(),
                code="FLATTEN_REQUESTED", message="flatten from-file", bot_id="from-file",
                state="reducing", caused_by="operator",
            )  # fmt: skip
            payload = event.model_dump_json().encode()
            headers = {"Nats-Msg-Id": message_id}
            await js.publish(
                subjects.SAFETY_EVENTS,
                payload,
                headers=signed(subjects.SAFETY_EVENTS, payload, headers) if sign else headers,
            )

        async def sells() -> list[TradeIntent]:
            return [i for i in await intents_of(js, "from-file") if i.side == "sell"]

        await flatten("flatten-forged", sign=False)

        async def refused() -> bool:
            return "SAFETY_EVENT_NOT_SIGNED" in (await _dead_letter(js) or "")

        await eventually(refused, "the unsigned flatten request dead-lettered")
        assert await sells() == []
        await flatten("flatten-signed", sign=True)
        (sell,) = await eventually(sells, "the sell the signed flatten request asks")
        assert sell.reason.code == "FLATTEN"


async def publish_refusal(
    js, stop: TradeIntent, message_id: str, *, signed_: bool = True, subject_bot: str | None = None
) -> None:
    """Safety's refusal of the stop, as safety publishes it; ``signed_=False`` or another bot's
    subject as anyone else."""
    refusal = OrderRejected(
        message_id=message_id, correlation_id=stop.intent_id, time=utc_now(), intent=stop,
        mode="mock", reasons=[Reason(code="HALTED", message="bot stopped is halted")],
        decided_at=utc_now(),
    )  # fmt: skip
    subject = subjects.for_token(subjects.ORDERS_REJECTED, subject_bot or stop.bot_id)
    payload = refusal.model_dump_json().encode()
    headers = {"Nats-Msg-Id": message_id}
    if signed_:
        headers = signed(subject, payload, headers)
    await js.publish(subject, payload, headers=headers)


async def test_a_stop_refused_while_the_signal_is_down_is_asked_again_after_it(
    tmp_path: Path, nats_url: str, js
) -> None:
    """Safety's refusals reach the signal through its durable consumer: one published while it
    was down is heard once it is back, and the stop is asked again under the next attempt's id
    (heard as a plain message, it was lost, and the position waited for a stop that was never
    placed). A refusal without safety's signature, or on another bot's subject, is refused."""
    (tmp_path / "bots.toml").write_text(CONFIG + STOPPED)
    await put_open_position(js, "stopped")
    settings = settings_for(tmp_path, nats_url)
    async with running(settings) as (_, web):
        stop = await stop_asked(js, web)
        await publish_refusal(js, stop, "refusal-forged", signed_=False)
        await publish_refusal(js, stop, "refusal-elsewhere", subject_bot="another-bot")

        codes = await eventually(lambda: dead_letter_codes(js, 2), "both refusals refused")
        assert sorted(codes) == ["REJECTION_NOT_SIGNED", "SUBJECT_MISMATCH"]
        assert [i.intent_id for i in await stop_intents(js, "stopped")] == [stop.intent_id]
    await publish_refusal(js, stop, "refusal-while-down")  # safety's, while the signal is down
    async with running(settings):
        tick = Ticker(product_id="ETH-BTC", price=Decimal("0.05"), time=utc_now())

        async def asked_again() -> list[str] | None:
            await js._nc.publish("tranche.market.ticker.ETH-BTC", tick.model_dump_json().encode())
            asked = [i.intent_id for i in await stop_intents(js, "stopped")]
            return asked if len(asked) == 2 else None

        asked = await eventually(asked_again, "the stop asked again after the restart")
        assert asked == [stop.intent_id, f"{stop.intent_id}:1"]
