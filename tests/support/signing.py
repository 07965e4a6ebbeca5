"""The test suite's own signing key pair (safety's, shared/signing.py): every in-process safety
signs with it and every executor verifies with it (``tests/conftest.py`` puts it in the
environment); tests that play safety sign with :func:`signed`."""

from __future__ import annotations

from shared.signing import Signer, new_key_pair

PRIVATE_KEY, PUBLIC_KEY = new_key_pair()
SIGNER = Signer(PRIVATE_KEY)


def signed(subject: str, payload: bytes, headers: dict[str, str] | None = None) -> dict[str, str]:
    """``headers`` plus safety's signature of ``payload`` on ``subject``."""
    return (headers or {}) | SIGNER.headers(subject, payload)
