"""``tranche dlq list`` and ``tranche dlq replay`` against a real NATS server: a dead letter is
shown with its reasons and sent again once, with an audit record."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest

from shared.bus import LETTER_PAYLOAD_BYTES, DeadLetters
from shared.contracts import DeadLetter, Reason
from shared.signing import HEADER, Verifier
from shared.streams import DLQ, ORDERS, ensure_streams
from tests.support.signing import PUBLIC_KEY, signed
from tranche.cli import main
from tranche.dlq_cli import REPLAYS_SUBJECT, NotReplayable, read_letters, replay

PAYLOAD = b'{"an": "order event the ledger refused"}'


def letter(letter_id: str, service: str, subject: str) -> DeadLetter:
    """As the services write them: a text payload has no base64 copy (only bytes that are not
    UTF-8 do), so a replay reads ``payload`` itself."""
    return DeadLetter(
        message_id=letter_id, service=service, subject=subject, payload=PAYLOAD.decode(),
        error="refused", reasons=[Reason(code="FILL_CONFLICT", message="fill t1 differs")],
        time=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip


async def subjects_in(nc, stream: str) -> list[tuple[str, bytes]]:
    js = nc.jetstream()
    info = await js.stream_info(stream)
    found = []
    for sequence in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
        message = await js.get_msg(stream, sequence)
        found.append((message.subject, message.data))
    return found


@pytest.fixture
async def nc(nats_url: str):
    connection = await nats.connect(nats_url)
    await ensure_streams(connection.jetstream())
    js = connection.jetstream()
    for item in (
        letter("dlq-ledger-1", "ledger", "tranche.orders.events.l-1"),
        letter("dlq-signal-1", "signal", "tranche.signals.inject.b-1"),
    ):
        await js.publish(f"tranche.dlq.{item.service}", item.model_dump_json().encode())
    yield connection
    await connection.close()


async def test_a_letter_is_replayed_once_with_an_audit_record(nc) -> None:
    ledger_letters, _ = await read_letters(nc, "ledger")
    assert [item.message_id for item in ledger_letters] == ["dlq-ledger-1"]
    record, sent = await replay(nc, "dlq-ledger-1", "alice")
    assert sent and record.subject == "tranche.orders.events.l-1"
    again, sent_again = await replay(nc, "dlq-ledger-1", "bob")
    assert not sent_again and again.replayed_by == "alice"
    orders = await subjects_in(nc, ORDERS.name)
    assert orders == [("tranche.orders.events.l-1", PAYLOAD)]  # byte for byte, once
    audit = [json.loads(data) for subject, data in await subjects_in(nc, DLQ.name)
             if subject == REPLAYS_SUBJECT]  # fmt: skip
    assert [(a["letter_id"], a["replayed_by"]) for a in audit] == [("dlq-ledger-1", "alice")]
    _, forced = await replay(nc, "dlq-ledger-1", "bob", again=True)
    assert forced and len(await subjects_in(nc, ORDERS.name)) == 2


async def test_an_unknown_letter_is_a_clear_error(nc) -> None:
    with pytest.raises(LookupError, match="no dead letter"):
        await replay(nc, "dlq-nothing", "alice")


def test_the_commands_list_and_replay(
    nats_url: str, tmp_path: Path, monkeypatch, capsys, nc
) -> None:
    monkeypatch.setenv("TRANCHE_DATA_DIR", str(tmp_path))  # no passwords: a server without users
    monkeypatch.delenv("TRANCHE_NATS_USER", raising=False)
    with pytest.raises(SystemExit) as listed:
        main(["dlq", "list", "--service", "ledger", "--json", "--nats-url", nats_url])
    assert listed.value.code == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert shown["message_id"] == "dlq-ledger-1" and shown["replayed"] is None
    assert shown["reasons"][0]["code"] == "FILL_CONFLICT"
    with pytest.raises(SystemExit) as replayed:
        main(["dlq", "replay", "dlq-ledger-1", "--nats-url", nats_url])
    assert replayed.value.code == 0 and "replayed dlq-ledger-1" in capsys.readouterr().out
    with pytest.raises(SystemExit) as missing:
        main(["dlq", "replay", "dlq-nothing", "--nats-url", nats_url])
    assert missing.value.code == 1


# -- a replay sends the refused message as it was sent -----------------------------------------

APPROVED = "tranche.orders.approved.b-1"


async def letter_of_stored(nc, subject: str, payload: bytes, headers: dict[str, str]) -> str:
    """Store a message on its stream, let a consumer receive it, and dead-letter it as a service
    does (``DeadLetters.send`` on the delivered message); the letter's id."""
    js = nc.jetstream()
    await js.publish(subject, payload, headers=headers)
    subscription = await js.pull_subscribe(subject, durable="dlq-test")
    (delivered,) = await subscription.fetch(1, timeout=5)

    class Delivered:  # what FastStream hands the middleware: the body and the raw message
        body = delivered.data
        raw_message = delivered

    letters = DeadLetters("executor")
    letters.nc = nc
    await letters.send(Delivered(), RuntimeError("the exchange was down"))  # type: ignore[arg-type]  # a stand-in of FastStream's message with the two attributes send reads
    await delivered.ack()
    (stored,) = [item for item in (await read_letters(nc, "executor"))[0]
                 if item.subject == subject]  # fmt: skip
    return stored.message_id


async def replayed(nc, subject: str):
    js = nc.jetstream()
    return await js.get_last_msg(ORDERS.name, subject)


async def test_a_replayed_approval_keeps_safetys_signature(nc) -> None:
    payload = b'{"an": "approval the executor could not place"}'
    letter_id = await letter_of_stored(nc, APPROVED, payload, signed(APPROVED, payload))
    (letter,) = [item for item in (await read_letters(nc, "executor"))[0]
                 if item.message_id == letter_id]  # fmt: skip
    assert letter.stream == ORDERS.name and letter.payload_bytes == len(payload)
    assert set(letter.headers or {}) == {HEADER}  # the server's Nats-* headers are not kept
    await replay(nc, letter_id, "alice")
    again = await replayed(nc, APPROVED)
    assert again.data == payload and again.headers["Nats-Msg-Id"] == f"replay-{letter_id}"
    assert Verifier(PUBLIC_KEY).valid(APPROVED, again.data, again.headers)


async def test_a_letter_whose_original_aged_out_replays_its_own_copy_with_headers(nc) -> None:
    payload = b'{"an": "approval"}'
    letter_id = await letter_of_stored(nc, APPROVED, payload, signed(APPROVED, payload))
    await nc.jetstream().purge_stream(ORDERS.name)  # the original is gone
    await replay(nc, letter_id, "alice")
    again = await replayed(nc, APPROVED)
    assert Verifier(PUBLIC_KEY).valid(APPROVED, again.data, again.headers)


async def test_a_payload_longer_than_the_letter_is_replayed_whole_from_its_stream(nc) -> None:
    payload = json.dumps({"note": "n" * 150_000}).encode()
    letter_id = await letter_of_stored(nc, APPROVED, payload, {})
    (letter,) = [item for item in (await read_letters(nc, "executor"))[0]
                 if item.message_id == letter_id]  # fmt: skip
    assert letter.truncated and len(letter.raw_payload()) == LETTER_PAYLOAD_BYTES
    await replay(nc, letter_id, "alice")
    assert (await replayed(nc, APPROVED)).data == payload


async def test_a_cut_letter_whose_original_is_gone_is_refused_and_nothing_sent(nc) -> None:
    payload = json.dumps({"note": "n" * 150_000}).encode()
    letter_id = await letter_of_stored(nc, APPROVED, payload, {})
    await nc.jetstream().purge_stream(ORDERS.name)
    with pytest.raises(NotReplayable, match="kept only the first 100,000 of 150,012 bytes"):
        await replay(nc, letter_id, "alice")
    assert await subjects_in(nc, ORDERS.name) == []
