"""An invalid message is dead-lettered whatever its keys, on a real NATS server: one unknown key
of 600 characters made a reason longer than a Reason may be, and 2,100 unknown keys a letter
larger than NATS publishes. Either way building or publishing the letter failed, the message was
redelivered until the server gave up on it, and nothing but a log line said it had existed."""

from __future__ import annotations

import json

import nats
import pytest
from faststream.nats.annotations import NatsMessage

from shared.bus import DeadLetters, durable, make_broker, make_router
from shared.contracts import DeadLetter, InjectedSignal
from shared.streams import DLQ, SIGNALS, Consumer, ensure_streams
from tests.support.waiting import eventually

MAX_DELIVER = 3


def long_key() -> bytes:
    return json.dumps({"side": "buy", "x" * 600: 1}).encode()


def many_keys() -> bytes:
    # ~900 KB: under NATS's 1 MB max_payload; its letter (payload cut to 100 KB plus one reason
    # per unknown key) is not.
    return json.dumps({"side": "buy", **{f"k{n:05d}" + "y" * 400: 0 for n in range(2100)}}).encode()


async def letters(js) -> list[DeadLetter]:
    info = await js.stream_info(DLQ.name)
    found = []
    for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
        found.append(DeadLetter.model_validate_json((await js.get_msg(DLQ.name, seq)).data))
    return found


@pytest.mark.parametrize("payload", [long_key, many_keys], ids=["long-key", "many-keys"])
async def test_an_invalid_message_is_dead_lettered_whatever_its_keys(
    nats_url: str, payload
) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    dead_letters = DeadLetters("letters")
    dead_letters.nc = nc
    router = make_router(dead_letters, max_deliver=MAX_DELIVER)
    handled: list[InjectedSignal] = []

    @durable(router, Consumer(SIGNALS, "letters-inject", "tranche.signals.inject.>",
                              max_deliver=MAX_DELIVER))  # fmt: skip
    async def on_inject(body: InjectedSignal, message: NatsMessage) -> None:
        handled.append(body)

    body = payload()
    assert len(body) < 1024 * 1024
    await js.publish("tranche.signals.inject.bot-1", body)
    broker = make_broker(nats_url, "letters")
    broker.include_router(router)
    await broker.start()
    try:
        found = await eventually(lambda: letters(js), "the dead letter", timeout=20)
    finally:
        await broker.stop()
        await nc.close()
    assert not handled
    (letter,) = found
    assert letter.subject == "tranche.signals.inject.bot-1"
    assert 1 <= len(letter.reasons) <= 50 and letter.reasons[0].code == "UNKNOWN_FIELD"
    assert all(len(reason.message) <= 500 for reason in letter.reasons)
