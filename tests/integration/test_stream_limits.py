"""Bounded streams (issue 14, item 10): 16,000 hostile messages grew the NATS store to 674 MB.
The dead-letter stream is capped by size and age and drops its oldest letters (with a metric and
a warning); a business stream is capped too but refuses a publish when full (the outbox keeps
the message and retries), so a limit never drops an unprocessed business message. A dead
letter of a text payload is no longer 2.3 times the payload (real NATS)."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import nats
from nats.js.api import DiscardPolicy
from nats.js.errors import APIError
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from shared import subjects
from shared.bus import DeadLetters
from shared.contracts import DeadLetter
from shared.streams import (
    ALL_STREAMS,
    DLQ,
    INTENTS,
    MARKET,
    ensure_streams,
    watch_stream_use,
    watch_stream_use_once,
)


async def test_every_stream_is_bounded_and_only_the_dlq_and_the_prices_drop_old(
    nats_url: str,
) -> None:
    nc = await nats.connect(nats_url)
    try:
        await ensure_streams(nc.jetstream())
        for stream in ALL_STREAMS:
            config = (await nc.jetstream().stream_info(stream.name)).config
            assert config.max_bytes and config.max_bytes > 0, stream.name
            assert config.max_age and config.max_age > 0, stream.name
            expected = DiscardPolicy.OLD if stream in (DLQ, MARKET) else DiscardPolicy.NEW
            assert config.discard == expected, stream.name
    finally:
        await nc.close()


async def test_a_full_dlq_drops_its_oldest_letters_with_a_metric_and_a_warning(
    nats_url: str,
) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    small = dataclasses.replace(DLQ, max_bytes=20_000)
    try:
        await js.add_stream(small.config())
        for n in range(100):
            await js.publish("tranche.dlq.test", json.dumps({"n": n, "pad": "x" * 400}).encode())
        info = await js.stream_info(DLQ.name)
        assert info.state.bytes <= 20_000 and info.state.last_seq == 100
        assert info.state.first_seq > 1  # the oldest went
        with capture_logs() as logs:
            await watch_stream_use_once(js, [small])
    finally:
        await nc.close()
    assert REGISTRY.get_sample_value("tranche_stream_dropped", {"stream": DLQ.name}) > 0
    assert REGISTRY.get_sample_value("tranche_stream_used_ratio", {"stream": DLQ.name}) > 0.8
    warned = [line for line in logs if line["event"] == "stream.nearly_full"]
    assert warned and warned[0]["when_full"] == "drops its oldest"


async def test_a_full_business_stream_refuses_the_publish_and_keeps_the_oldest(
    nats_url: str,
) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        await js.add_stream(dataclasses.replace(INTENTS, max_bytes=5_000).config())
        refused = 0
        for n in range(50):
            try:
                await js.publish("tranche.intents.b", json.dumps({"n": n, "p": "x" * 300}).encode())
            except APIError:
                refused += 1
        info = await js.stream_info(INTENTS.name)
        assert refused > 0 and info.state.first_seq == 1
    finally:
        await nc.close()


async def test_a_dead_letter_of_text_is_not_much_larger_than_its_payload(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    letters = DeadLetters("test")
    letters.nc = nc
    payload = json.dumps({"side": "buy", "note": "n" * 20_000}).encode()

    class Raw:
        subject = "tranche.signals.inject.b"

    class Message:
        body = payload
        raw_message = Raw()

    try:
        await letters.send(Message(), ValueError("bad"))  # type: ignore[arg-type]
        stored = await js.get_last_msg(DLQ.name, subjects.for_token(subjects.DLQ, "test"))
    finally:
        await nc.close()
    letter = DeadLetter.model_validate_json(stored.data)
    assert letter.raw_payload() == payload
    assert len(stored.data) < 1.3 * len(payload)


async def test_a_stream_that_could_not_be_read_is_watched_again(nats_url: str) -> None:
    """A read that fails (here: the stream is not there yet; in a cluster, a leader election)
    is asked again next round: the watch once stopped looking at a stream after one failure."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    small = dataclasses.replace(DLQ, max_bytes=20_000)
    watch = asyncio.create_task(watch_stream_use(js, [small], every_s=0.05))
    try:
        await asyncio.sleep(0.2)  # several rounds without the stream
        assert not watch.done()
        await js.add_stream(small.config())
        for n in range(60):
            await js.publish("tranche.dlq.test", json.dumps({"n": n, "pad": "x" * 400}).encode())

        async def watched() -> float:
            while True:
                used = REGISTRY.get_sample_value("tranche_stream_used_ratio", {"stream": DLQ.name})
                if used is not None and used > 0.8:
                    return used
                await asyncio.sleep(0.05)

        assert await asyncio.wait_for(watched(), 10) > 0.8
    finally:
        watch.cancel()
        await nc.close()
