"""Signatures on what only one service may say (DESIGN.md, promise 3, beyond the broker).

Two services sign, each with its own Ed25519 key:

- **safety** signs every message it publishes through its outbox (approvals, rejections, safety
  events) and its answers to operator commands; the executor places an approval and follows a
  safety event only with a valid signature.
- **the executor** signs every message of its outbox (its order events,
  ``tranche.orders.events.<bot>``); the ledger books, safety counts and the signal reads an
  order event only with a valid signature.

NATS permissions already keep others off those subjects; the signature still holds when they do
not (a stolen admin password, a push consumer delivering stored messages onto a business subject,
a permissions mistake: docs/deploy.md, "What the broker cannot stop").

What is signed (canonical form, version 1): the bytes
``b"tranche-signature-v1\\n" + subject + b"\\n" + payload``, where ``payload`` is the exact
JSON payload as published (pydantic's ``model_dump_json``: compact, fields in declaration order,
UTF-8) and ``subject`` the NATS subject it was published on. Verifying those exact bytes, not a
re-serialisation, means no two JSON libraries have to agree on a form; binding the subject means
a signed message for one bot cannot be replayed on another bot's subject. The signature travels
in the ``Tranche-Signature`` header as ``ed25519:<base64>``.

Keys: safety's private key is ``TRANCHE_SIGNING_KEY`` (PEM, PKCS#8, or one line
``ed25519:<base64 of the 32 raw bytes>``), its public key ``TRANCHE_SIGNING_PUBLIC_KEY`` (the
same two forms) for the executor and the CLI; the executor's are ``TRANCHE_ORDER_SIGNING_KEY``
and ``TRANCHE_ORDER_SIGNING_PUBLIC_KEY`` (for the ledger, safety, the signal and the dashboard);
each also as a file (``..._FILE``). ``tranche up`` makes both pairs per data directory
(:mod:`tranche.credentials`), ``tranche nats passwords`` prints fresh pairs as ``.env`` lines.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HEADER = "Tranche-Signature"
SCHEME = "ed25519:"
_CONTEXT = b"tranche-signature-v1\n"


class SigningKeyError(ValueError):
    """A key that cannot be read; the message names what was expected, never the key."""


def signed_bytes(subject: str, payload: bytes) -> bytes:
    return _CONTEXT + subject.encode() + b"\n" + payload


def new_key_pair() -> tuple[str, str]:
    """(private key PEM, public key PEM) of a fresh Ed25519 key."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return private, public_pem(key.public_key())


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def one_line(private_pem: str) -> tuple[str, str]:
    """The pair as single-line values (``ed25519:<base64 of the raw 32 bytes>``) for ``.env``
    files, which cannot hold a PEM's line breaks: (private, public)."""
    key = Signer(private_pem)._key
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return SCHEME + base64.b64encode(raw).decode(), SCHEME + base64.b64encode(public).decode()


def _raw(text: str) -> bytes | None:
    """The 32 bytes of a one-line key, or None when ``text`` is not one."""
    if not text.strip().startswith(SCHEME):
        return None
    try:
        raw = base64.b64decode(text.strip().removeprefix(SCHEME), validate=True)
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


class Signer:
    """The signing service's side: a header that proves it published ``payload`` on ``subject``."""

    def __init__(self, private_pem: str, variable: str = "TRANCHE_SIGNING_KEY"):
        """``private_pem``: PEM (PKCS#8, unencrypted) or the one-line form (:func:`one_line`);
        ``variable`` is the setting it came from, named when it is not a usable key."""
        raw = _raw(private_pem)
        try:
            key = (
                Ed25519PrivateKey.from_private_bytes(raw)
                if raw is not None
                else serialization.load_pem_private_key(private_pem.encode(), password=None)
            )
        except (ValueError, TypeError):
            raise SigningKeyError(
                f"{variable} is not an unencrypted PEM private key (or ed25519:<base64>)"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"{variable} must be an Ed25519 key")
        self._key = key
        self.public_pem = public_pem(key.public_key())

    def __repr__(self) -> str:
        return "Signer(<Ed25519 private key>)"

    def headers(self, subject: str, payload: bytes) -> dict[str, str]:
        signature = self._key.sign(signed_bytes(subject, payload))
        return {HEADER: SCHEME + base64.b64encode(signature).decode()}


class Verifier:
    """The reader's side: the executor and the CLI for safety's key; the ledger, safety, the
    signal and the dashboard for the executor's."""

    def __init__(self, public_pem_text: str, variable: str = "TRANCHE_SIGNING_PUBLIC_KEY"):
        """``public_pem_text``: PEM or the one-line form (:func:`one_line`); ``variable`` is the
        setting it came from, named when it is not a usable key."""
        raw = _raw(public_pem_text)
        try:
            key = (
                Ed25519PublicKey.from_public_bytes(raw)
                if raw is not None
                else serialization.load_pem_public_key(public_pem_text.encode())
            )
        except (ValueError, TypeError):
            raise SigningKeyError(
                f"{variable} is not a PEM public key (or ed25519:<base64>)"
            ) from None
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(f"{variable} must be an Ed25519 key")
        self._key = key

    def valid(self, subject: str, payload: bytes, headers: Mapping[str, str] | None) -> bool:
        """True only for a well-formed signature by the signer's key over exactly these bytes."""
        value = (headers or {}).get(HEADER, "")
        if not value.startswith(SCHEME):
            return False
        try:
            signature = base64.b64decode(value.removeprefix(SCHEME), validate=True)
            self._key.verify(signature, signed_bytes(subject, payload))
        except (InvalidSignature, ValueError):
            return False
        return True


def key_text(value: str | None, file: Path | None, variable: str) -> str:
    """A key given as a value or as a file (``<variable>_FILE``); raises
    :class:`SigningKeyError` naming the variable when neither is usable."""
    if value:
        return value
    if file is not None:
        try:
            return file.read_text()
        except OSError as error:
            raise SigningKeyError(
                f"{variable}_FILE: cannot read {file}: {error.strerror}"
            ) from None
    raise SigningKeyError(f"{variable} (or {variable}_FILE) is not set")


def signer_from(value: str | None, file: Path | None, variable: str) -> Signer:
    """The signer a service's settings name (``variable`` or ``<variable>_FILE``); raises
    :class:`SigningKeyError` naming the variable when neither holds a usable key."""
    return Signer(key_text(value, file, variable), variable)


def verifier_from(value: str | None, file: Path | None, variable: str) -> Verifier:
    """The verifier a service's settings name (``variable`` or ``<variable>_FILE``); raises
    :class:`SigningKeyError` naming the variable when neither holds a usable key."""
    return Verifier(key_text(value, file, variable), variable)


K = TypeVar("K", Signer, Verifier)


def key_or_exit(service: str, why: str, load: Callable[[], K]) -> K:
    """``load()``'s key, or stop the service at start with one sentence: the variable, what is
    wrong with it (never the key) and ``why`` the service cannot run without it."""
    try:
        return load()
    except SigningKeyError as error:
        raise SystemExit(f"{service}: {error}; {why}") from None
