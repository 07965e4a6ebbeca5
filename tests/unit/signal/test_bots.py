"""Bots at run time, without a broker: what a change does to a running bot, what a bot needs to
be accepted, how the live catalog takes revisions, and how the CLI says a refusal."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.signal.bots import Roster, check_bot, plan_change
from shared.bots import BotRecord, BotState, LiveCatalog, announcement
from shared.catalog import Bot, Catalog, Product
from tranche.bots_cli import explain

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
PRODUCT = Product(
    base_min_size=Decimal("0.001"),
    base_increment=Decimal("0.00000001"),
    quote_increment=Decimal("0.00000001"),
    quote_min_size=Decimal("0.0001"),
)
BOT = Bot(product_id="ETH-BTC", quote_size=Decimal("0.01"))
OTHER = BOT.model_copy(update={"quote_size": Decimal("0.02")})


def state(config: Bot = BOT, status: str = "active", revision: int | None = 1) -> BotState:
    return BotState("b", config, status, revision)  # type: ignore[arg-type]


def record(config: Bot = BOT, status: str = "active", change: str = "created") -> BotRecord:
    return BotRecord(
        bot_id="b", config=config, status=status, change=change, changed_at=T0, changed_by="op"
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("before", "after", "plan"),
    [
        (None, state(), "start"),
        (state(), None, "stop"),
        (None, None, "keep"),
        (state(), state(OTHER, revision=2), "restart"),
        (state(), state(status="paused", revision=2), "pause"),
        (state(status="paused"), state(revision=2), "resume"),
        (state(status="paused"), state(OTHER, status="paused", revision=2), "restart"),
        (state(), state(revision=2), "keep"),
    ],
)
def test_what_a_change_does_to_a_running_bot(before, after, plan) -> None:
    assert plan_change(before, after) == plan


@pytest.mark.parametrize(
    ("bot", "words"),
    [
        (BOT.model_copy(update={"product_id": "DOGE-USD"}), "DOGE-USD, which is not a product"),
        (Bot.model_validate(BOT.model_dump() | {"signals": [{"name": "astrology"}]}), "astrology"),
        (
            Bot.model_validate(
                BOT.model_dump() | {"signals": [{"name": "rsi", "params": {"period": 0}}]}
            ),
            "bot b",
        ),
    ],
)
def test_a_bot_needs_a_known_product_and_signals_that_build(bot: Bot, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        check_bot("b", bot, {"ETH-BTC": PRODUCT})


def test_a_good_bot_passes() -> None:
    good = Bot.model_validate(BOT.model_dump() | {"signals": [{"name": "rsi"}]})
    check_bot("b", good, {"ETH-BTC": PRODUCT})


def live() -> LiveCatalog:
    return LiveCatalog(Catalog(products={"ETH-BTC": PRODUCT}, bots={"b": BOT}))


async def test_the_live_catalog_takes_each_revision_once_and_in_order() -> None:
    catalog = live()
    seen: list[tuple[str | None, str | None]] = []

    async def listener(bot_id, before, after) -> None:
        seen.append((before and before.status, after and after.status))

    catalog.listen(listener)
    assert catalog.state("b").revision is None  # the file's, not in the bucket yet
    assert await catalog.apply(record(), 3)
    assert not await catalog.apply(record(OTHER), 3)  # the same revision again
    assert not await catalog.apply(record(OTHER), 2)  # an older one
    assert catalog.bots["b"] == BOT and catalog.state("b").revision == 3
    assert await catalog.apply(record(status="paused", change="paused"), 4)
    assert catalog.state("b").paused and "b" in catalog.bots  # paused bots are still bots
    assert await catalog.apply(record(status="removed", change="removed"), 5)
    assert "b" not in catalog.bots and catalog.state("b") is None
    assert catalog.all_bots["b"] == BOT  # its fills stay reportable
    assert seen == [("active", "active"), ("active", "paused"), ("paused", None)]


async def test_a_bot_of_a_product_this_service_does_not_know_is_refused() -> None:
    catalog = live()
    stranger = record(BOT.model_copy(update={"product_id": "DOGE-USD"}))
    assert not await catalog.apply(stranger, 1)
    assert catalog.bots["b"] == BOT


async def test_the_roster_restarts_a_changed_bot_and_keeps_its_trailing_high() -> None:
    catalog = live()
    roster = Roster(catalog)
    first = roster.get("b")
    first.runtime.highest["pos-1"] = Decimal("0.07")
    first.runtime.confirmation.feed("buy", "hot", T0)
    await catalog.apply(record(status="paused", change="paused"), 2)
    assert roster.get("b").runtime is first.runtime and roster.get("b").state.paused
    await catalog.apply(record(OTHER, status="paused", change="changed"), 3)
    restarted = roster.get("b")
    assert restarted.runtime is not first.runtime
    assert restarted.runtime.confirmation.feed("buy", "hot", T0).count == 1  # from nothing
    assert restarted.runtime.highest == {"pos-1": Decimal("0.07")}
    await catalog.apply(record(status="removed", change="removed"), 4)
    assert roster.get("b") is None and roster.trading("ETH-BTC") == []


def test_an_announcement_is_named_by_bot_and_revision() -> None:
    first, again = announcement(record(), 7), announcement(record(), 7)
    assert first.message_id == again.message_id == "bot-b-r7"
    assert (first.change, first.revision, first.status, first.time) == ("created", 7, "active", T0)


@pytest.mark.parametrize(
    ("status", "body", "sentence"),
    [
        (
            409,
            {"detail": {"code": "BOT_EXISTS", "message": "bot b exists"}},
            "BOT_EXISTS: bot b exists",
        ),
        (
            422,
            {"detail": [{"loc": ["body", "config", "quote_size"], "msg": "must be > 0"}]},
            "invalid bot: config.quote_size: must be > 0",
        ),
        (401, {"detail": "a valid bearer token is required"}, "HTTP 401: a valid bearer"),
    ],
)
def test_the_cli_says_a_refusal_in_one_sentence(status: int, body: dict, sentence: str) -> None:
    assert explain(httpx.Response(status, json=body)).startswith(sentence)


@given(
    st.lists(st.sampled_from(["active", "paused", "removed"]), min_size=1, max_size=12),
    st.randoms(use_true_random=False),
)
def test_whatever_order_revisions_arrive_in_the_newest_one_wins(statuses, rng) -> None:
    records = [(record(status=s, change="changed"), rev) for rev, s in enumerate(statuses, 1)]
    shuffled = records[:]
    rng.shuffle(shuffled)
    catalog = live()

    async def apply_all() -> None:
        for found, revision in shuffled:
            await catalog.apply(found, revision)

    asyncio.run(apply_all())
    newest = statuses[-1]
    assert catalog.revision("b") == len(statuses)
    if newest == "removed":
        assert catalog.state("b") is None and "b" not in catalog.bots
    else:
        assert catalog.state("b").status == newest and catalog.state("b").revision == len(statuses)
