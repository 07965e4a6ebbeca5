"""The executor's signature on order events (shared/signing.py, shared/bus.py): one check that
the ledger, safety and the signal all use, and the key settings they read it from."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from shared.bus import InvalidMessage, require_executors_signature
from shared.settings import ReadsOrderEvents
from shared.signing import HEADER, SigningKeyError, Verifier, one_line, signer_from
from tests.support.signing import (
    ORDER_PRIVATE_KEY,
    ORDER_PUBLIC_KEY,
    signed,
    signed_by_executor,
)

SUBJECT = "tranche.orders.events.bot-1"
PAYLOAD = b'{"client_order_id":"c-1","status":"filled"}'
EXECUTORS = Verifier(ORDER_PUBLIC_KEY, "TRANCHE_ORDER_SIGNING_PUBLIC_KEY")


def message(subject: str, payload: bytes, headers: dict[str, str] | None) -> Any:
    """What a FastStream handler is given: the NATS message is its ``raw_message``."""
    return SimpleNamespace(
        raw_message=SimpleNamespace(subject=subject, data=payload, headers=headers)
    )


def refusal(subject: str, payload: bytes, headers: dict[str, str] | None) -> list[str]:
    """The reason codes an order event is refused with; empty when it is acted on."""
    try:
        require_executors_signature(EXECUTORS, message(subject, payload, headers))
    except InvalidMessage as refused:
        return [reason.code for reason in refused.reasons]
    return []


def test_an_order_event_the_executor_signed_is_acted_on() -> None:
    assert refusal(SUBJECT, PAYLOAD, signed_by_executor(SUBJECT, PAYLOAD)) == []


@pytest.mark.parametrize(
    "headers",
    [
        None,  # a copy a push consumer delivered: no signature at all
        {HEADER: "ed25519:AAAA"},  # malformed
        signed(SUBJECT, PAYLOAD),  # safety's key: safety does not speak for the executor
        signed_by_executor("tranche.orders.events.bot-2", PAYLOAD),  # another bot's subject
        signed_by_executor(SUBJECT, PAYLOAD.replace(b"filled", b"open")),  # another payload
    ],
    ids=["unsigned", "malformed", "safetys-key", "other-subject", "other-payload"],
)
def test_anything_else_is_refused_as_not_signed(headers: dict[str, str] | None) -> None:
    assert refusal(SUBJECT, PAYLOAD, headers) == ["ORDER_EVENT_NOT_SIGNED"]


def test_a_reader_takes_the_executors_public_key_in_either_form_or_from_a_file(
    tmp_path: Path,
) -> None:
    headers = signed_by_executor(SUBJECT, PAYLOAD)
    as_pem = ReadsOrderEvents(order_signing_public_key=ORDER_PUBLIC_KEY).order_event_verifier()
    assert as_pem.valid(SUBJECT, PAYLOAD, headers)
    one_line_public = one_line(ORDER_PRIVATE_KEY)[1]
    as_line = ReadsOrderEvents(order_signing_public_key=one_line_public).order_event_verifier()
    assert as_line.valid(SUBJECT, PAYLOAD, headers)
    mounted = tmp_path / "public"
    mounted.write_text(ORDER_PUBLIC_KEY)
    from_file = ReadsOrderEvents(
        order_signing_public_key=None, order_signing_public_key_file=mounted
    ).order_event_verifier()
    assert from_file.valid(SUBJECT, PAYLOAD, headers)


def test_a_reader_without_the_executors_key_does_not_start_and_says_which_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRANCHE_ORDER_SIGNING_PUBLIC_KEY")
    missing = ReadsOrderEvents(service="ledger")
    with pytest.raises(SystemExit, match=r"ledger: TRANCHE_ORDER_SIGNING_PUBLIC_KEY .* not set"):
        missing.order_event_verifier()
    garbage = ReadsOrderEvents(service="ledger", order_signing_public_key="not a key")
    with pytest.raises(SystemExit, match="TRANCHE_ORDER_SIGNING_PUBLIC_KEY is not a PEM") as bad:
        garbage.order_event_verifier()
    assert "not a key" not in str(bad.value)


def test_a_bad_executor_key_is_refused_naming_its_own_variable() -> None:
    with pytest.raises(SigningKeyError, match="TRANCHE_ORDER_SIGNING_KEY is not an unencrypted"):
        signer_from("garbage", None, "TRANCHE_ORDER_SIGNING_KEY")
    with pytest.raises(SigningKeyError, match="TRANCHE_ORDER_SIGNING_KEY must be an Ed25519"):
        signer_from(_rsa_private_pem(), None, "TRANCHE_ORDER_SIGNING_KEY")


def _rsa_private_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
