"""``tranche dlq list`` and ``tranche dlq replay`` against a real NATS server: a dead letter is
shown with its reasons and sent again once, with an audit record."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest

from shared.contracts import DeadLetter, Reason
from shared.streams import DLQ, ORDERS, ensure_streams
from tranche.cli import main
from tranche.dlq_cli import REPLAYS_SUBJECT, read_letters, replay

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
