"""What the Ed25519 signatures cost per message (shared/signing.py).

    python -m bench.signatures [COUNT]

Signs and verifies a typical order event (three fills, as the executor publishes it) COUNT
times, best of five, and prints the CPU time of one signature (the executor's, once per order
event), of one verification (each of the four readers: ledger, safety, signal, dashboard) and
what that adds up to for an order with a ``submitted`` and a ``filled`` event. Figures only, no
assertion; compare with the CPU ms per booked order in docs/benchmarks.md.
"""

from __future__ import annotations

import sys
import timeit
from datetime import UTC, datetime
from decimal import Decimal

from shared.contracts import Fill, OrderEvent
from shared.signing import Signer, Verifier, new_key_pair

READERS = 4
EVENTS_PER_ORDER = 2


def order_event() -> tuple[str, bytes]:
    at = datetime(2018, 1, 20, tzinfo=UTC)
    fills = [
        Fill(trade_id=f"t{n}", price=Decimal("0.09"), size=Decimal("0.1"), fee=Decimal("0.0001"),
             time=at)
        for n in range(3)
    ]  # fmt: skip
    event = OrderEvent(
        message_id="m", correlation_id="c", time=at, bot_id="eth-btc-momentum",
        product_id="ETH-BTC", mode="mock", intent_id="i", client_order_id="c-1", action="entry",
        side="buy", status="filled", fills=fills, filled_size=Decimal("0.3"),
    )  # fmt: skip
    return f"tranche.orders.events.{event.bot_id}", event.model_dump_json().encode()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    subject, payload = order_event()
    private, public = new_key_pair()
    signer, verifier = Signer(private), Verifier(public)
    headers = signer.headers(subject, payload)
    assert verifier.valid(subject, payload, headers)

    def best_us(work) -> float:
        return min(timeit.repeat(work, number=count, repeat=5)) / count * 1e6

    sign = best_us(lambda: signer.headers(subject, payload))
    verify = best_us(lambda: verifier.valid(subject, payload, headers))
    per_order = EVENTS_PER_ORDER * (sign + READERS * verify) / 1000
    print(f"order event of {len(payload)} bytes, best of 5 x {count}")
    print(f"sign (executor, once per event)      {sign:8.1f} us")
    print(f"verify (each of {READERS} readers, per event) {verify:8.1f} us")
    print(f"per order ({EVENTS_PER_ORDER} events, all services)      {per_order:8.2f} ms CPU")


if __name__ == "__main__":
    main()
