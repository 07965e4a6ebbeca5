"""A running service's JetStream setup made again after the server lost it (shared/healing.py),
against a real NATS server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared.healing import Healer, missing_consumers
from shared.streams import (
    ALL_STREAMS,
    LEDGER_ORDER_EVENTS,
    SAFETY_INTENTS,
    check_streams,
    ensure_streams,
)

CONSUMERS = (SAFETY_INTENTS, LEDGER_ORDER_EVENTS)


async def until(probe, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await probe():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    """The streams provisioned and a healer that may create them running beside the test."""
    nc = await nats.connect(nats_url)
    await ensure_streams(nc.jetstream())
    healer = Healer(nc.jetstream, CONSUMERS, ensure_streams, check_every_s=0.2)
    task = asyncio.create_task(healer.run())
    try:
        yield nc.jetstream()
    finally:
        task.cancel()
        await nc.close()


async def test_a_deleted_consumer_is_made_again_with_its_config(js: JetStreamContext) -> None:
    await until(lambda: _none_missing(js))
    await js.delete_consumer(SAFETY_INTENTS.stream.name, SAFETY_INTENTS.durable)
    await until(lambda: _none_missing(js))
    info = await js.consumer_info(SAFETY_INTENTS.stream.name, SAFETY_INTENTS.durable)
    assert info.config.max_deliver == SAFETY_INTENTS.config().max_deliver
    assert info.config.filter_subject == SAFETY_INTENTS.filter_subject


async def test_streams_deleted_are_made_again_before_their_consumers(
    js: JetStreamContext,
) -> None:
    await until(lambda: _none_missing(js))
    for stream in ALL_STREAMS:
        await js.delete_stream(stream.name)
    await until(lambda: _none_missing(js))
    await check_streams(js)  # every stream and bucket is back


async def test_with_check_only_it_waits_for_the_admin_and_says_not_ready(nats_url: str) -> None:
    """``TRANCHE_STREAM_SETUP=check``: the service may not create streams, so it reports not
    ready with the reason until someone provisions them, then makes its consumers."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    healer = Healer(nc.jetstream, CONSUMERS, check_streams, check_every_s=0.2)  # no create
    task = asyncio.create_task(healer.run())
    try:
        await until(lambda: _unhealthy(healer))
        with pytest.raises(ConnectionError, match="missing"):
            await healer.ok()
        assert await missing_consumers(js, CONSUMERS) == list(CONSUMERS)
        await ensure_streams(js)  # the admin provisions
        await until(lambda: _none_missing(js))
        await until(lambda: _healthy(healer))
        await healer.ok()
    finally:
        task.cancel()
        await nc.close()


async def _none_missing(js) -> bool:
    try:
        return not await missing_consumers(js, CONSUMERS)
    except NotFoundError:
        return False


async def _unhealthy(healer: Healer) -> bool:
    return not healer.healthy


async def _healthy(healer: Healer) -> bool:
    return healer.healthy
