"""What a run of the services decided, read back from the JetStream streams, for comparing runs.

The journal of a run is every intent, safety decision, order event, position and safety event
it published (the durable message API of DESIGN.md), grouped per kind and bot in stream order.
Two replays of the same data are the same run when their journals are equal; ``fingerprint``
condenses one into a hash that ``tranche replay`` prints.

Only wall-clock audit fields are left out (:data:`WALL_CLOCK_FIELDS`: when safety happened to
decide); everything else, ids, prices, sizes, fees, event times and reasons, must match exactly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import nats
from nats.js.api import DeliverPolicy

from shared import subjects
from shared.streams import INTENTS, LEDGER, ORDERS, SAFETY

Journal = dict[str, list[dict[str, Any]]]
"""``"<kind> <bot_id>"`` -> the messages of that kind for that bot, in stream order."""

KINDS: tuple[tuple[str, str, str], ...] = (
    ("intent", INTENTS.name, subjects.all_of(subjects.INTENTS)),
    ("approved", ORDERS.name, subjects.all_of(subjects.ORDERS_APPROVED)),
    ("rejected", ORDERS.name, subjects.all_of(subjects.ORDERS_REJECTED)),
    ("order", ORDERS.name, subjects.all_of(subjects.ORDERS_EVENTS)),
    ("position", LEDGER.name, subjects.all_of(subjects.LEDGER_POSITIONS)),
    ("safety", SAFETY.name, subjects.SAFETY_EVENTS),
)
WALL_CLOCK_FIELDS = frozenset({"decided_at"})


def normalised(body: dict[str, Any]) -> dict[str, Any]:
    """The message without its wall-clock audit fields."""
    return {key: value for key, value in body.items() if key not in WALL_CLOCK_FIELDS}


def group(kind: str, bodies: list[dict[str, Any]]) -> Journal:
    """Messages of one kind by bot, in the order given. Per bot, not overall: two bots' messages
    may interleave differently from run to run without either deciding differently."""
    journal: Journal = {}
    for body in bodies:
        bot = body.get("bot_id") or body.get("intent", {}).get("bot_id") or "-"
        journal.setdefault(f"{kind} {bot}", []).append(normalised(body))
    return journal


def fingerprint(journal: Journal) -> str:
    """A short hash of the whole journal: equal journals, equal fingerprints."""
    text = json.dumps(journal, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(first: Journal, second: Journal, limit: int = 5) -> list[str]:
    """Where two journals part, in words (at most ``limit`` places; empty: the same run)."""
    found: list[str] = []
    for key in sorted(set(first) | set(second)):
        a, b = first.get(key, []), second.get(key, [])
        if len(a) != len(b):
            found.append(f"{key}: {len(a)} messages against {len(b)}")
        for n, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                fields = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
                shown = ", ".join(f"{f}: {x.get(f)!r} != {y.get(f)!r}" for f in fields[:3])
                found.append(f"{key} #{n + 1} ({x.get('message_id')}): {shown}")
                break
        if len(found) >= limit:
            break
    return found[:limit]


async def _read(nats_url: str) -> Journal:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        journal: Journal = {}
        for kind, stream, subject in KINDS:
            info = await js.stream_info(stream, subjects_filter=subject)
            expected = sum((info.state.subjects or {}).values())
            bodies: list[dict[str, Any]] = []
            if expected:
                reader = await js.subscribe(
                    subject, stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
                )
                while len(bodies) < expected:
                    message = await reader.next_msg(timeout=10)
                    bodies.append(json.loads(message.data))
                await reader.unsubscribe()
            journal |= group(kind, bodies)
        return journal
    finally:
        await nc.close()


def read_journal(nats_url: str) -> Journal:
    """Every durable message of the run on the NATS server at ``nats_url``."""
    return asyncio.run(_read(nats_url))
