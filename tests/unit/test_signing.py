"""Safety's signature (shared/signing.py): what it covers and what it refuses."""

from __future__ import annotations

import pytest

from shared.signing import (
    HEADER,
    Signer,
    SigningKeyError,
    Verifier,
    new_key_pair,
    one_line,
    signed_bytes,
)

PRIVATE, PUBLIC = new_key_pair()
SUBJECT, PAYLOAD = "tranche.orders.approved.bot-1", b'{"client_order_id":"c-1"}'


def test_a_signature_covers_exactly_the_subject_and_the_payload() -> None:
    headers = Signer(PRIVATE).headers(SUBJECT, PAYLOAD)
    verifier = Verifier(PUBLIC)
    assert verifier.valid(SUBJECT, PAYLOAD, headers)
    assert not verifier.valid("tranche.orders.approved.bot-2", PAYLOAD, headers)  # replayed
    assert not verifier.valid(SUBJECT, PAYLOAD + b" ", headers)  # one byte more
    assert not verifier.valid(SUBJECT, PAYLOAD.replace(b"c-1", b"c-2"), headers)


@pytest.mark.parametrize(
    "headers",
    [None, {}, {HEADER: ""}, {HEADER: "ed25519:"}, {HEADER: "ed25519:%%%"}, {HEADER: "rsa:AAAA"}],
)
def test_a_missing_or_malformed_signature_is_not_valid(headers) -> None:
    assert not Verifier(PUBLIC).valid(SUBJECT, PAYLOAD, headers)


def test_another_keys_signature_is_not_valid() -> None:
    other = Signer(new_key_pair()[0]).headers(SUBJECT, PAYLOAD)
    assert not Verifier(PUBLIC).valid(SUBJECT, PAYLOAD, other)


def test_the_canonical_form_is_versioned_and_binds_the_subject() -> None:
    assert signed_bytes("a.b", b"{}") == b"tranche-signature-v1\na.b\n{}"


def test_the_one_line_form_is_the_same_key() -> None:
    private, public = one_line(PRIVATE)
    assert "\n" not in private + public
    headers = Signer(private).headers(SUBJECT, PAYLOAD)
    assert Verifier(PUBLIC).valid(SUBJECT, PAYLOAD, headers)
    assert Verifier(public).valid(SUBJECT, PAYLOAD, Signer(PRIVATE).headers(SUBJECT, PAYLOAD))


@pytest.mark.parametrize("text", ["", "garbage", "ed25519:AAAA", PUBLIC])
def test_a_bad_private_key_is_refused_naming_the_variable_never_echoing_it(text: str) -> None:
    with pytest.raises(SigningKeyError, match="TRANCHE_SIGNING_KEY") as refused:
        Signer(text)
    assert text.strip() == "" or text not in str(refused.value)


def test_the_signer_never_shows_its_key() -> None:
    assert PRIVATE not in repr(Signer(PRIVATE))
