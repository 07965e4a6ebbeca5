"""The test suite's own signing key pairs (shared/signing.py): safety's, with which every
in-process safety signs and every executor verifies, and the executor's, with which every
in-process executor signs its order events and the ledger, safety, the signal and the dashboard
verify them (``tests/conftest.py`` puts both in the environment). Tests that play safety sign
with :func:`signed`, tests that play the executor with :func:`signed_by_executor`."""

from __future__ import annotations

from shared.signing import Signer, new_key_pair

PRIVATE_KEY, PUBLIC_KEY = new_key_pair()
SIGNER = Signer(PRIVATE_KEY)
ORDER_PRIVATE_KEY, ORDER_PUBLIC_KEY = new_key_pair()
EXECUTOR_SIGNER = Signer(ORDER_PRIVATE_KEY, "TRANCHE_ORDER_SIGNING_KEY")


def signed(
    subject: str,
    payload: bytes,
    headers: dict[str, str] | None = None,
    signer: Signer = SIGNER,
) -> dict[str, str]:
    """``headers`` plus ``signer``'s signature (safety's by default) of ``payload`` on
    ``subject``."""
    return (headers or {}) | signer.headers(subject, payload)


def signed_by_executor(
    subject: str, payload: bytes, headers: dict[str, str] | None = None
) -> dict[str, str]:
    """``headers`` plus the executor's signature of an order event's ``payload`` on
    ``subject``."""
    return signed(subject, payload, headers, EXECUTOR_SIGNER)
