"""The JetStream streams, consumers and key-value bucket, declared in one place.

Only durable subjects live in streams; signal evaluations stay core NATS. Market tickers are
published on core NATS and kept a day in memory (``TRANCHE_MARKET``): the mock exchange catches
up on the prices it missed while the executor was down (its resting stops trigger as they would
have), nothing else reads them from the stream.
Durable consumer names carry a version (``-v2``): NATS binds to an existing consumer and silently
ignores a changed config, so a config change ships as a new name.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError
from prometheus_client import Gauge

from shared import subjects
from shared.logging import get_logger

log = get_logger(__name__)

STREAM_USED = Gauge(
    "tranche_stream_used_ratio", "Bytes a stream holds over its max_bytes", ["stream"]
)
STREAM_DROPPED = Gauge(
    "tranche_stream_dropped",
    "Messages a stream dropped by its limits (age or size) since it was created",
    ["stream"],
)

DUPLICATE_WINDOW_S = 15 * 60  # a re-publish from an outbox within 15 minutes is dropped by id
MAX_AGE_S = 30 * 24 * 3600
MiB = 1024 * 1024
BUSINESS_MAX_BYTES = 1024 * MiB
"""A business stream (signals, intents, orders, positions, safety events, bot changes) refuses
a publish once it holds this much (``discard: new``): the publisher's outbox keeps the message
and retries, so a limit never drops a message nobody has processed yet."""
DLQ_MAX_BYTES = 256 * MiB
DLQ_MAX_AGE_S = 7 * 24 * 3600
"""The dead-letter stream drops its oldest letters beyond these (``discard: old``): a flood of
hostile input must not fill the disk, and a letter is read within days or never."""
MARKET_MAX_BYTES = 64 * MiB
MARKET_MAX_AGE_S = 24 * 3600
"""Market prices are a model's convenience (docs/executor.md), not a record: the oldest go."""
NEARLY_FULL = 0.8


@dataclass(frozen=True)
class Stream:
    name: str
    subjects: tuple[str, ...]
    description: str
    max_bytes: int = BUSINESS_MAX_BYTES
    max_age_s: float = MAX_AGE_S
    drops_oldest: bool = False
    """``discard: old`` (the oldest messages go when full) instead of refusing new ones."""
    in_memory: bool = False
    """Kept in the server's memory, not on disk: lost with the server, never fsynced."""

    def config(self, replicas: int = 1) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            description=self.description,
            storage=StorageType.MEMORY if self.in_memory else StorageType.FILE,
            max_age=self.max_age_s,
            max_bytes=self.max_bytes,
            discard=DiscardPolicy.OLD if self.drops_oldest else DiscardPolicy.NEW,
            duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=replicas,
        )


SIGNALS = Stream(
    "TRANCHE_SIGNALS", (subjects.all_of(subjects.SIGNALS_INJECT),), "signals injected from outside"
)
INTENTS = Stream("TRANCHE_INTENTS", (subjects.all_of(subjects.INTENTS),), "trade intents")
ORDERS = Stream(
    "TRANCHE_ORDERS",
    (
        subjects.all_of(subjects.ORDERS_APPROVED),
        subjects.all_of(subjects.ORDERS_REJECTED),
        subjects.all_of(subjects.ORDERS_EVENTS),
    ),
    "safety decisions and order lifecycle events",
)
LEDGER = Stream(
    "TRANCHE_LEDGER",
    (subjects.all_of(subjects.LEDGER_POSITIONS), subjects.all_of(subjects.LEDGER_BREACHES)),
    "positions after every change, tranche-cap breaches",
)
SAFETY = Stream("TRANCHE_SAFETY", (subjects.SAFETY_EVENTS,), "breakers, halts, limits")
DLQ = Stream(
    "TRANCHE_DLQ",
    (subjects.all_of(subjects.DLQ),),
    "messages a service refused",
    max_bytes=DLQ_MAX_BYTES,
    max_age_s=DLQ_MAX_AGE_S,
    drops_oldest=True,
)
BOTS = Stream("TRANCHE_BOTS", (subjects.BOTS_CHANGED,), "bots created, changed or removed")

MARKET = Stream(
    "TRANCHE_MARKET",
    (subjects.all_of(subjects.MARKET_TICKER),),
    "market prices of the last day, for the mock exchange to catch up after a restart",
    max_bytes=MARKET_MAX_BYTES,
    max_age_s=MARKET_MAX_AGE_S,
    drops_oldest=True,
    in_memory=True,
)

ALL_STREAMS: tuple[Stream, ...] = (SIGNALS, INTENTS, ORDERS, LEDGER, SAFETY, DLQ, BOTS, MARKET)


def stream_for(subject: str) -> Stream:
    """The stream a durable subject is stored in (raises for core-NATS subjects)."""
    for stream in ALL_STREAMS:
        for pattern in stream.subjects:
            if (pattern.endswith(".>") and subject.startswith(pattern[:-1])) or subject == pattern:
                return stream
    raise LookupError(f"{subject} is not a durable subject")


ACK_WAIT_S = 60.0
"""Longer than the slowest handler (a safety decision or a booking waits at most a few seconds
for storage). No consumer sets ``backoff``: with one, NATS times the *first* redelivery of an
unacknowledged message by ``backoff[0]`` instead of ``ack_wait``, so a handler slower than 1 s
was delivered again while it still ran (STACK-NOTES)."""
RETRY_DELAYS_S: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0)
"""After a failed delivery the handler nacks with these delays (by delivery count) instead of
the hot loop a plain nack gives."""


@dataclass(frozen=True)
class Consumer:
    """A durable pull consumer: several instances of a service share it as a work queue."""

    stream: Stream
    durable: str
    filter_subject: str
    max_deliver: int = 10
    ack_wait_s: float = ACK_WAIT_S
    retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S
    """Delay of the nack after a failed delivery, by delivery count (the last repeats): sent
    with the nack (:func:`shared.bus.retry_delay`), never as the consumer's ``backoff``."""
    new_only: bool = False
    """Start with the messages published after the consumer was first created (not the stream's
    whole history): for commands such as a halt, which mean something only when they happen."""

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            filter_subject=self.filter_subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW if self.new_only else DeliverPolicy.ALL,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver,
            max_ack_pending=1000,
        )


SIGNAL_INJECT = Consumer(SIGNALS, "signal-inject-v2", subjects.all_of(subjects.SIGNALS_INJECT))
SIGNAL_ORDER_EVENTS = Consumer(
    ORDERS, "signal-order-events-v1", subjects.all_of(subjects.ORDERS_EVENTS), new_only=True
)
"""The status of each stop on the exchange the signal service asked (its stop-loss stands down
while one is live; one that ended is asked again), durable so that an event published while the
signal service was down is still heard after it; the history before it first ran is not."""
SIGNAL_ORDER_REJECTIONS = Consumer(
    ORDERS, "signal-order-rejections-v1", subjects.all_of(subjects.ORDERS_REJECTED), new_only=True
)
"""Safety's refusals, for the stops on the exchange the signal service asked (one refused is
asked again): durable, so that a refusal published while the signal service was down is heard
after it, on top of the stop state it kept (it would otherwise wait for a stop never placed)."""
SIGNAL_SAFETY_EVENTS = Consumer(
    SAFETY, "signal-safety-events-v1", subjects.SAFETY_EVENTS, new_only=True
)
"""Safety's flatten requests and resumes: durable, so that a flatten asked while the signal
service was down (a deploy, a crash) is still carried out when it is back; it heard them as
plain messages before, and a flatten asked then was never done."""
SAFETY_INTENTS = Consumer(INTENTS, "safety-intents-v2", subjects.all_of(subjects.INTENTS))
SAFETY_ORDER_EVENTS = Consumer(
    ORDERS, "safety-order-events-v2", subjects.all_of(subjects.ORDERS_EVENTS)
)
EXECUTOR_APPROVED = Consumer(
    ORDERS, "executor-approved-v2", subjects.all_of(subjects.ORDERS_APPROVED)
)
EXECUTOR_SAFETY_EVENTS = Consumer(
    SAFETY, "executor-safety-events-v2", subjects.SAFETY_EVENTS, new_only=True
)
"""A halt cancels the open orders it covers; halts from before the executor first ran do not."""
SAFETY_LEDGER_BREACHES = Consumer(
    LEDGER, "safety-ledger-breaches-v1", subjects.all_of(subjects.LEDGER_BREACHES)
)
"""The ledger's tranche-cap breaches, which safety reports as its own safety events."""
LEDGER_ORDER_EVENTS = Consumer(
    ORDERS, "ledger-order-events-v2", subjects.all_of(subjects.ORDERS_EVENTS)
)


STREAM_NAME_IN_USE = 10058
"""JetStream's error code for a stream created by someone else between the look and the add."""
NO_PEERS_FOR_PLACEMENT = 10005
"""JetStream's error code for a stream whose replicas find too few peers online: a cluster that
has just formed (or lost a node) says so until its peers are known."""


async def ensure_stream(js: JetStreamContext, stream: Stream, replicas: int = 1) -> None:
    """Create the stream, or bring its config up to date."""
    config = stream.config(replicas)
    try:
        await js.stream_info(stream.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
        except BadRequestError as error:
            if error.err_code != STREAM_NAME_IN_USE:
                raise  # e.g. no peers for its replicas yet: not made, nothing to update
            await js.update_stream(config)  # another service created it meanwhile
    else:
        await js.update_stream(config)


async def ensure_streams(js: JetStreamContext, replicas: int = 1) -> None:
    """Create every stream and both buckets (positions, bots), or bring their config up to date."""
    for stream in ALL_STREAMS:
        await ensure_stream(js, stream, replicas)
    await ensure_positions_bucket(js, replicas)
    await ensure_bots_bucket(js, replicas)


class StreamsMissing(Exception):
    """Streams a service needs do not exist and it may not create them (``stream_setup=check``)."""


async def check_streams(js: JetStreamContext) -> None:
    """Only look: every stream and both buckets must exist (a per-service NATS user may
    read stream info but not create streams; ``tranche nats provision`` creates them)."""
    names = [stream.name for stream in ALL_STREAMS] + [
        f"KV_{bucket}" for bucket in (subjects.POSITIONS_BUCKET, subjects.BOTS_BUCKET)
    ]
    missing = []
    declared = {stream.name: stream.subjects for stream in ALL_STREAMS}
    for name in names:
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            missing.append(name)
            continue
        # A stream provisioned by an older version may lack a subject added since: a publish on
        # it would find no stream, and the outbox would wait on it forever.
        lacking = set(declared.get(name, ())) - set(info.config.subjects or ())
        if lacking:
            missing.append(f"{name}'s subjects {', '.join(sorted(lacking))}")
    if missing:
        raise StreamsMissing(
            f"JetStream has no {', '.join(missing)}: provision the streams first as the admin "
            "user (tranche nats provision), or set TRANCHE_STREAM_SETUP=create"
        )


async def _ensure_bucket(js: JetStreamContext, name: str, description: str, replicas: int):
    try:
        return await js.key_value(name)
    except Exception:  # BucketNotFoundError or NotFoundError, by version
        return await js.create_key_value(
            KeyValueConfig(
                bucket=name,
                history=5,
                storage=StorageType.FILE,
                replicas=replicas,
                description=description,
            )
        )


async def ensure_positions_bucket(js: JetStreamContext, replicas: int = 1):
    return await _ensure_bucket(
        js,
        subjects.POSITIONS_BUCKET,
        "latest position per bot, written only by the ledger",
        replicas,
    )


async def ensure_bots_bucket(js: JetStreamContext, replicas: int = 1):
    """Every bot's configuration and status; written only by the signal service. A removed bot
    stays as a delete marker, so a restart does not bring it back from the file."""
    return await _ensure_bucket(
        js, subjects.BOTS_BUCKET, "bots at run time, written only by the signal service", replicas
    )


async def watch_stream_use(
    js: JetStreamContext, streams: tuple[Stream, ...] | list[Stream], every_s: float
) -> None:
    """:func:`watch_stream_use_once` every ``every_s`` seconds, for good. Every stream is asked
    each round: a read that failed (a new stream leader being elected, a lost connection, a
    stream not provisioned yet) is asked again next round, not dropped for good (every
    service's user may read stream info: deploy/nats/permissions.conf)."""
    while True:
        await watch_stream_use_once(js, streams)
        await asyncio.sleep(every_s)


async def watch_stream_use_once(
    js: JetStreamContext, streams: tuple[Stream, ...] | list[Stream]
) -> list[Stream]:
    """Set the use and drop gauges of ``streams`` and warn about one nearly full: a full
    dead-letter stream drops its oldest letters, a full business stream refuses publishes.
    Returns the streams it could read this time."""
    readable = []
    for stream in streams:
        try:
            info = await js.stream_info(stream.name)
        except Exception as error:  # not allowed or not there: nothing to report
            log.debug("stream.info_failed", stream=stream.name, error=str(error))
            continue
        readable.append(stream)
        limit = info.config.max_bytes or 0
        used = info.state.bytes / limit if limit > 0 else 0.0
        STREAM_USED.labels(stream.name).set(used)
        # With limits retention a message leaves only by a limit: what went before first_seq.
        STREAM_DROPPED.labels(stream.name).set(max(info.state.first_seq - 1, 0))
        if used >= NEARLY_FULL and not stream.in_memory:  # a window of prices is meant to fill
            log.warning(
                "stream.nearly_full",
                stream=stream.name,
                bytes=info.state.bytes,
                max_bytes=limit,
                when_full="drops its oldest" if stream.drops_oldest else "refuses publishes",
            )
    return readable
