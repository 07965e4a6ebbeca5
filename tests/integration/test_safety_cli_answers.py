"""``tranche halt`` says "halted" only on safety's signed word (issue 14, item 2 beyond the
broker): an answer from anyone else on ``tranche.safety.control`` is not believed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from shared import subjects
from shared.contracts import SafetyCommand, SafetyCommandResult
from shared.signing import Signer, new_key_pair
from tests.support import signing
from tranche.safety_cli import send

HALTED = SafetyCommandResult(ok=True, code="HALT", message="bot b-1 halted", state="halted")


class Answerer:
    """Something answering on tranche.safety.control in safety's queue group, in a thread of
    its own (``send`` runs its own event loop)."""

    def __init__(self, nats_url: str, signer: Signer | None):
        self.nats_url, self.signer = nats_url, signer
        self.ready, self.done = threading.Event(), None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        nc = await nats.connect(self.nats_url)
        self.done = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.stop = lambda: loop.call_soon_threadsafe(self.done.set)

        async def answer(msg) -> None:
            payload = HALTED.model_dump_json().encode()
            headers = self.signer.headers(msg.reply, payload) if self.signer else None
            await nc.publish(msg.reply, payload, headers=headers)

        await nc.subscribe(subjects.SAFETY_CONTROL, queue="safety", cb=answer)
        await nc.flush()
        self.ready.set()
        await self.done.wait()
        await nc.close()

    def __enter__(self) -> Answerer:
        self.thread.start()
        assert self.ready.wait(5)
        return self

    def __exit__(self, *_) -> None:
        self.stop()
        self.thread.join(5)


@pytest.fixture
def command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SafetyCommand]:
    monkeypatch.setenv("TRANCHE_DATA_DIR", str(tmp_path))  # no stack passwords to pick up
    monkeypatch.delenv("TRANCHE_NATS_USER", raising=False)
    yield SafetyCommand(command="halt", command_id="c-1", bot_id="b-1")


def test_an_unsigned_answer_is_not_believed(nats_url: str, command: SafetyCommand) -> None:
    with Answerer(nats_url, None), pytest.raises(ConnectionError, match="not signed by safety"):
        send(nats_url, command, timeout=3)


def test_an_answer_signed_by_another_key_is_not_believed(
    nats_url: str, command: SafetyCommand
) -> None:
    impostor = Signer(new_key_pair()[0])
    with Answerer(nats_url, impostor), pytest.raises(ConnectionError, match="not signed"):
        send(nats_url, command, timeout=3)


def test_safetys_signed_answer_is_believed(nats_url: str, command: SafetyCommand) -> None:
    with Answerer(nats_url, signing.SIGNER):
        assert send(nats_url, command, timeout=3).state == "halted"


def test_without_safetys_public_key_nothing_is_confirmed(
    nats_url: str, command: SafetyCommand, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRANCHE_SIGNING_PUBLIC_KEY")
    with Answerer(nats_url, signing.SIGNER), pytest.raises(ConnectionError, match="public key"):
        send(nats_url, command, timeout=3)
