"""The transactional outbox against a real NATS server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import nats
import pytest
from sqlmodel import Session, col, select, update

from shared import subjects
from shared.bus import outbox_publisher
from shared.contracts import PositionUpdate, Reason, TradeIntent
from shared.db import create_tables, make_engine
from shared.outbox import OutboxMessage, OutboxRelay, stage, stage_with_put
from shared.service import Service
from shared.settings import ServiceSettings
from shared.streams import INTENTS, ensure_streams
from tests.support.nats_server import NatsServer

NOW = datetime(2018, 1, 20, 12, 0, tzinfo=UTC)


def intent(n: int) -> TradeIntent:
    return TradeIntent(
        message_id=f"intent-{n}", correlation_id=f"intent-{n}", time=NOW, intent_id=f"intent-{n}",
        signal_id=f"s-{n}", bot_id="bot-1", product_id="ETH-BTC", action="entry", side="buy",
        quote_size=Decimal("0.01"), temperature=Decimal(80), band="hot",
        reason=Reason(code="SIGNAL", message="t"),
    )  # fmt: skip


async def stream_messages(js, subject: str) -> list:
    info = await js.stream_info(INTENTS.name)
    found = []
    for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
        message = await js.get_msg(INTENTS.name, seq)
        if message.subject == subject:
            found.append(message)
    return found


SUBJECT = subjects.for_token(subjects.INTENTS, "bot-1")


async def streams_at(nats_url: str):
    """A client of the server at ``nats_url`` with the streams made, and its JetStream."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    return nc, js


def stage_intents(engine, numbers) -> None:
    """Stage the intents numbered ``numbers`` in one transaction, as a handler would."""
    with Session(engine) as session:
        for n in numbers:
            stage(session, SUBJECT, intent(n))
        session.commit()


@pytest.fixture
def engine(database_url: str):
    engine = make_engine(database_url)
    create_tables(engine, [OutboxMessage])
    yield engine
    engine.dispose()


async def test_staged_messages_go_out_once_in_order_with_their_id(engine, nats_url: str) -> None:
    nc, js = await streams_at(nats_url)
    stage_intents(engine, [0, 1, 2, 0])  # staging the same message twice keeps one
    with Session(engine) as session:  # and so does staging it again in a later transaction
        stage(session, SUBJECT, intent(1))
        session.commit()
        assert len(session.exec(select(OutboxMessage)).all()) == 3
    relay = OutboxRelay(engine, outbox_publisher(nc))
    assert await relay.flush() == 3
    assert await relay.flush() == 0

    # A crash after the publish but before the row was marked sent: it goes out again, and
    # JetStream drops it by its Nats-Msg-Id.
    with Session(engine) as session:
        session.exec(update(OutboxMessage).values(published_at=None))
        session.commit()
    assert await relay.flush() == 3
    stored = await stream_messages(js, SUBJECT)
    assert [m.headers["Nats-Msg-Id"] for m in stored] == ["intent-0", "intent-1", "intent-2"]
    assert TradeIntent.model_validate_json(stored[1].data) == intent(1)
    await nc.close()


async def test_a_failed_publish_stays_in_the_outbox_until_nats_is_back(
    engine,
    nats_server: NatsServer,
) -> None:
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    await ensure_streams(js)
    subject = subjects.for_token(subjects.INTENTS, "bot-1")
    with Session(engine) as session:
        stage(session, subject, intent(7))
        session.commit()
    relay = OutboxRelay(engine, outbox_publisher(nc))
    nats_server.stop()
    with pytest.raises(Exception):  # noqa: B017 - whichever error nats-py raises while down
        await relay.flush()
    assert relay.pending_count() == 1
    nats_server.start()  # same store directory: the streams are still there
    for _ in range(50):
        if nc.is_connected:
            break
        await asyncio.sleep(0.1)
    assert await relay.flush() == 1
    assert relay.pending_count() == 0
    with Session(engine) as session:
        rows = session.exec(
            select(OutboxMessage).where(col(OutboxMessage.published_at).is_not(None))
        )
        assert len(list(rows)) == 1
    assert len(await stream_messages(js, subject)) == 1
    await nc.close()


async def test_a_row_failing_mid_batch_leaves_it_and_what_follows_pending(
    engine, nats_url: str
) -> None:
    """The batch is pipelined, but only the rows before the first failure are marked sent, so
    what follows goes out after the failed row is fixed, in the staged order."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    subject = subjects.for_token(subjects.INTENTS, "bot-1")
    with Session(engine) as session:
        stage(session, subject, intent(10))
        # A key-value put to a bucket nobody created: the server has no stream to answer it.
        session.add(OutboxMessage(message_id="kv-missing", subject="$KV.missing.k", payload="{}",
                                  kv_bucket="missing", kv_key="k"))  # fmt: skip
        stage(session, subject, intent(11))
        session.commit()
    relay = OutboxRelay(engine, outbox_publisher(nc, timeout=2))
    with pytest.raises(Exception):  # noqa: B017 - no responders or a timeout, as nats-py says it
        await relay.flush()
    with Session(engine) as session:
        pending = session.exec(
            select(OutboxMessage.message_id)
            .where(col(OutboxMessage.published_at).is_(None))
            .order_by(col(OutboxMessage.id))
        ).all()
    assert pending == ["kv-missing", "intent-11"]
    await js.create_key_value(bucket="missing")
    assert await relay.flush() == 2
    assert relay.pending_count() == 0
    stored = await stream_messages(js, subject)
    # intent-11 reached the stream in the failed batch already; its re-publish was dropped.
    assert [m.headers["Nats-Msg-Id"] for m in stored] == ["intent-10", "intent-11"]
    await nc.close()


async def test_more_than_a_batch_and_what_is_staged_during_a_flush_all_go_out_in_order(
    engine, nats_url: str
) -> None:
    # The relay reads again only after a full batch; a message staged while it publishes wakes
    # it (the handler's commit, then its wake), so none waits for the timer, none is lost.
    nc, js = await streams_at(nats_url)
    stage_intents(engine, range(5))
    publish = outbox_publisher(nc)
    staged_meanwhile = asyncio.Event()

    async def publish_then_stage(rows) -> None:
        await publish(rows)
        if len(rows) < 2 and not staged_meanwhile.is_set():  # a commit during the last batch
            staged_meanwhile.set()
            stage_intents(engine, [5])
            relay.wake()

    relay = OutboxRelay(engine, publish_then_stage, batch=2)
    loop = asyncio.create_task(relay.run(poll_s=60))  # the timer never fires in this test
    relay.wake()
    for _ in range(100):
        if relay.pending_count() == 0 and staged_meanwhile.is_set():
            break
        await asyncio.sleep(0.05)
    loop.cancel()
    assert relay.pending_count() == 0
    stored = await stream_messages(js, SUBJECT)
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [f"intent-{n}" for n in range(6)]
    await nc.close()


async def test_only_a_transaction_that_staged_something_wakes_the_relay(
    database_url: str, tmp_path
) -> None:
    service = Service(ServiceSettings(data_dir=tmp_path, database_url=database_url), [])
    create_tables(service.engine, service.tables)
    woken: list[str] = []
    service.relay.wake = lambda: woken.append("wake")  # type: ignore[method-assign]  # counted
    await service.transact(lambda session: session.exec(select(OutboxMessage)).all())
    assert woken == []  # a read, or a change that stages nothing: nothing to publish
    await service.transact(lambda session: stage(session, SUBJECT, intent(20)))
    assert woken == ["wake"]
    await service.transact(lambda session: stage(session, SUBJECT, intent(20)))
    assert woken == ["wake", "wake"]  # staged again (kept once): a wake too cannot hurt
    service.engine.dispose()


BOT = "bot-1"
T0 = datetime(2018, 1, 20, tzinfo=UTC)


def position(sequence: int, quantity: str) -> PositionUpdate:
    open_ = Decimal(quantity) > 0
    return PositionUpdate(
        message_id=f"pos-{BOT}-{sequence}", correlation_id="c", time=T0, bot_id=BOT,
        product_id="ETH-BTC", mode="mock", position_id="p-1" if open_ else None,
        status="open" if open_ else "flat", quantity=Decimal(quantity),
        average_entry_price=Decimal("0.05") if open_ else None,
        break_even_price=Decimal("0.05") if open_ else None,
        cost_basis=Decimal(quantity) * Decimal("0.05"), realized_pnl=Decimal(0),
        fees_paid=Decimal(0), tranches=[], sequence=sequence,
    )  # fmt: skip


def book(engine, update: PositionUpdate) -> None:
    """What the ledger's booking stages (services/ledger/store.py: the message and the put)."""
    with Session(engine) as session:
        stage_with_put(
            session, subjects.for_token(subjects.LEDGER_POSITIONS, BOT), update,
            subjects.POSITIONS_BUCKET, BOT,
        )  # fmt: skip
        session.commit()


async def test_a_second_relay_never_puts_an_older_position_back(engine, nats_url: str) -> None:
    """Two relays on one outbox (two ledger instances sharing their database): a put published
    without an id could not be dropped as a second copy, and a relay slow between its read and
    its publish put an older position back in the bucket, for good (flat while 1 ETH was held)."""
    nc_a = await nats.connect(nats_url)
    nc_b = await nats.connect(nats_url)
    try:
        await ensure_streams(nc_a.jetstream())
        read_by_b, go_b = asyncio.Event(), asyncio.Event()
        publish_b = outbox_publisher(nc_b)

        async def slow_b(rows):  # instance B's loop is busy for a moment after its read
            read_by_b.set()
            await go_b.wait()
            await publish_b(rows)

        relay_a = OutboxRelay(engine, outbox_publisher(nc_a))
        relay_b = OutboxRelay(engine, slow_b)

        book(engine, position(3, "0"))  # the bot's last position closed: flat
        flush_b = asyncio.create_task(relay_b.flush())
        await asyncio.wait_for(read_by_b.wait(), 10)
        assert await relay_a.flush() == 2
        book(engine, position(4, "1"))  # a new entry filled: 1 ETH open
        assert await relay_a.flush() == 2
        go_b.set()
        await flush_b

        bucket = await nc_a.jetstream().key_value(subjects.POSITIONS_BUCKET)
        held = PositionUpdate.model_validate_json((await bucket.get(BOT)).value)
        assert (held.sequence, held.status) == (4, "open"), (
            f"the bucket holds position {held.sequence} ({held.status}, {held.quantity}) "
            "after the ledger's newest, 4 (open, 1 ETH), had been put"
        )
    finally:
        await nc_a.close()
        await nc_b.close()
