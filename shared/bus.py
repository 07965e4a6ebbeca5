"""NATS plumbing every service shares: the broker, durable subscriptions, the dead-letter path,
and publishing outbox rows with ``Nats-Msg-Id``.

Two failure kinds, handled differently:

* **bad input** (not JSON, a wrong field, a float where a decimal string belongs, a rule the body
  breaks): published to ``tranche.dlq.<service>`` with the original subject, payload and reasons,
  then terminated, so it is neither lost nor redelivered forever;
* **a transient failure** (database or broker unavailable): nacked with a delay and retried; on the
  last allowed delivery it goes to the dead-letter subject too instead of being dropped.
If the dead-letter publish itself fails, the message is nacked, never terminated.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import nats
from faststream import AckPolicy, BaseMiddleware, Context
from faststream.exceptions import NackMessage, RejectMessage
from faststream.middlewares import ExceptionMiddleware
from faststream.nats import JStream, NatsBroker, NatsRouter, PullSub
from faststream.nats.message import NatsMessage
from faststream.nats.prometheus import NatsPrometheusMiddleware
from faststream.security import SASLPlaintext
from nats.aio.client import Client as NatsClient
from prometheus_client import REGISTRY, Counter
from pydantic import ValidationError

from shared import subjects
from shared.contracts import DeadLetter, Reason
from shared.logging import get_logger
from shared.money import utc_now
from shared.outbox import BatchFailed, Pending
from shared.signing import Verifier
from shared.streams import DLQ, RETRY_DELAYS_S, Consumer, stream_for

log = get_logger(__name__)

DEAD_LETTERS = Counter(
    "tranche_dead_letters_total", "Messages sent to the dead-letter subject", ["service"]
)
RETRIES = Counter("tranche_handler_retries_total", "Deliveries nacked for a retry", ["service"])

FAULT_NACKS = Counter(
    "tranche_fault_nacks_total", "First deliveries nacked by the redelivery-storm fault", ["kind"]
)

RETRY_DELAY_S = 2.0

# A server cut off by a partition closes nothing: the client's socket stays open and nats-py's
# default (a ping every 120 s, 2 unanswered) would keep a service on a dead node for minutes.
# A ping every 3 s finds it in 6-9 s and the client moves to another node of the cluster.
PING_INTERVAL_S = 3
MAX_OUTSTANDING_PINGS = 2


class InvalidMessage(Exception):
    """Raised by a handler for a message that parsed but cannot be accepted (e.g. the subject
    names another bot than the body). Goes to the dead-letter subject with its reasons."""

    def __init__(self, *reasons: Reason):
        super().__init__("; ".join(reason.message for reason in reasons))
        self.reasons = list(reasons)


@dataclass(frozen=True)
class Delivery:
    subject: str
    stream_sequence: int | None
    stream_time: datetime | None
    num_delivered: int
    stream: str | None = None


def handled_message(broker: NatsBroker) -> NatsMessage:
    """The message the calling handler is handling, from FastStream's context. A handler that
    declares ``msg: NatsMessage`` instead has it resolved by FastStream's ``Context.use``, a sync
    function that fast_depends runs in a worker thread: a thread hop for every message, most of
    what a hot handler's dependency injection cost (py-spy, safety at 100 bots)."""
    message = broker.context.get_local("message")
    if message is None:
        raise RuntimeError("handled_message() is only for a handler handling a message")
    return message


def delivery_of(message: NatsMessage) -> Delivery:
    raw = message.raw_message
    try:
        metadata = raw.metadata
    except Exception:  # a core NATS message has no JetStream metadata
        return Delivery(raw.subject, None, None, 1)
    return Delivery(
        raw.subject,
        metadata.sequence.stream,
        metadata.timestamp,
        metadata.num_delivered,
        metadata.stream,
    )


def require_subject_token(message: NatsMessage, expected: str, what: str) -> None:
    """The subject's last token must name the bot (or product) the body names: a message for one
    bot on another bot's subject would slip past per-subject permissions and ordering."""
    token = subjects.last_token(message.raw_message.subject)
    if token != expected:
        raise InvalidMessage(
            Reason(
                code="SUBJECT_MISMATCH",
                message=f"{what} for {expected} arrived on the subject of {token}",
            )
        )


def require_signature(verifier: Verifier, message: NatsMessage, code: str, what: str) -> None:
    """Only what the key's owner signed on this very subject is acted on: anything else goes to
    the dead-letter subject with ``code`` (shared/signing.py). A push consumer can deliver any
    stored bytes onto a business subject with the server's authority (docs/deploy.md, "What the
    broker cannot stop"); the signature is what such a copy lacks."""
    raw = message.raw_message
    if not verifier.valid(raw.subject, raw.data, raw.headers):
        raise InvalidMessage(Reason(code=code, message=f"{what} (shared/signing.py): not acted on"))


def require_executors_signature(verifier: Verifier, message: NatsMessage) -> None:
    """An order event is booked, counted or read only with the executor's signature; every
    reader (ledger, safety, signal) refuses the rest with the same code."""
    require_signature(
        verifier,
        message,
        "ORDER_EVENT_NOT_SIGNED",
        "an order event without the executor's valid signature",
    )


def reasons_from(error: Exception) -> list[Reason]:
    """Readable reasons for a refused message, one per problem."""
    if isinstance(error, InvalidMessage):
        return error.reasons
    if isinstance(error, ValidationError):
        reasons = []
        for item in error.errors():
            location = ".".join(str(part) for part in item["loc"] if part != "body") or "payload"
            if len(location) > 200:  # a key is the sender's: a reason stays readable and bounded
                location = location[:200] + "…"
            if isinstance(item.get("input"), bytes | bytearray):
                reasons.append(Reason(code="NOT_JSON", message="the payload is not a JSON object"))
            elif item["type"] == "extra_forbidden":
                reasons.append(Reason(code="UNKNOWN_FIELD", message=f"{location}: unknown field"))
            elif item["type"] == "missing":
                reasons.append(Reason(code="MISSING_FIELD", message=f"{location}: field required"))
            else:
                reasons.append(
                    Reason(code="INVALID_FIELD", message=f"{location}: {item['msg']}"[:500])
                )
        # One letter, under NATS's maximum payload: a message with thousands of unknown keys made
        # a letter too large to publish, and was redelivered until the server gave up on it.
        if len(reasons) > LETTER_REASONS:
            more = len(reasons) - LETTER_REASONS + 1
            reasons = [
                *reasons[: LETTER_REASONS - 1],
                Reason(code="INVALID_MESSAGE", message=f"and {more} more problems"),
            ]
        return reasons or [Reason(code="INVALID_MESSAGE", message=str(error)[:500])]
    return [Reason(code="HANDLER_FAILED", message=f"{type(error).__name__}: {error}"[:500])]


LETTER_REASONS = 50
"""A letter names at most this many problems (the last says how many more there were)."""
LETTER_PAYLOAD_BYTES = 100_000
"""A letter keeps this much of the refused payload; a replay of a longer one reads the original
from its stream (``tranche dlq replay``)."""
LETTER_HEADERS = 16
LETTER_HEADER_CHARS = 1_000


def kept_headers(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """The refused message's own headers (a signature, say), without the server's ``Nats-*``
    ones, bounded so a hostile sender cannot make its letter large."""
    own = {
        name[:LETTER_HEADER_CHARS]: value[:LETTER_HEADER_CHARS]
        for name, value in (headers or {}).items()
        if not name.lower().startswith("nats-")
    }
    return dict(list(own.items())[:LETTER_HEADERS]) or None


class DeadLetters:
    """Publishes refused messages to ``tranche.dlq.<service>`` on a JetStream connection."""

    def __init__(self, service: str):
        self.service = service
        self.nc: NatsClient | None = None

    async def send(self, message: NatsMessage, error: Exception) -> None:
        delivery = delivery_of(message)
        body: bytes = message.body if isinstance(message.body, bytes) else bytes(message.body)
        # A stream sequence names a durable message for good; a core message by its content.
        origin = delivery.stream_sequence or hashlib.sha256(body).hexdigest()[:20]
        letter_id = f"dlq-{self.service}-{delivery.subject}-{origin}"
        kept = body[:LETTER_PAYLOAD_BYTES]
        try:
            text: str | None = kept.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        letter = DeadLetter(
            message_id=letter_id,
            service=self.service,
            subject=delivery.subject,
            payload=text if text is not None else kept.decode("utf-8", errors="replace"),
            # Base64 only when the text is not exact: a letter is not twice its payload.
            payload_base64=None if text is not None else base64.b64encode(kept).decode(),
            error=str(error)[:2000],
            reasons=reasons_from(error),
            time=utc_now(),
            stream_sequence=delivery.stream_sequence,
            stream=delivery.stream,
            payload_bytes=len(body),
            headers=kept_headers(getattr(message.raw_message, "headers", None)),
        )
        if self.nc is None:
            raise RuntimeError("dead-letter publisher is not connected")
        await self.nc.jetstream().publish(
            subjects.for_token(subjects.DLQ, self.service),
            letter.model_dump_json().encode(),
            headers={"Nats-Msg-Id": letter_id},
            stream=DLQ.name,
        )
        DEAD_LETTERS.labels(self.service).inc()
        log.warning(
            "message.dead_lettered",
            subject=delivery.subject,
            stream_sequence=delivery.stream_sequence,
            reasons=[reason.code for reason in letter.reasons],
        )


def retry_delay(delays_s: tuple[float, ...], num_delivered: int) -> float:
    """The nack delay after failed delivery number ``num_delivered`` (1-based): the schedule's
    entry for it, the last entry once the schedule runs out."""
    return delays_s[min(max(num_delivered, 1), len(delays_s)) - 1]


def dead_letter_middleware(
    dead_letters: DeadLetters, max_deliver: int, retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S
) -> ExceptionMiddleware:
    """Route bad input to the DLQ and retry transient failures (see the module docstring)."""

    async def on_error(error: Exception, message: NatsMessage = Context("message")) -> None:
        delivery = delivery_of(message)
        bad_input = isinstance(error, ValidationError | InvalidMessage)
        if not bad_input and delivery.num_delivered < max_deliver:
            RETRIES.labels(dead_letters.service).inc()
            log.warning(
                "message.retry",
                subject=delivery.subject,
                delivered=delivery.num_delivered,
                error=f"{type(error).__name__}: {error}",
            )
            raise NackMessage(delay=retry_delay(retry_delays_s, delivery.num_delivered))
        try:
            await dead_letters.send(message, error)
        except Exception as dlq_error:  # never drop: try again later
            log.error("dlq.publish_failed", error=str(dlq_error), subject=delivery.subject)
            raise NackMessage(delay=RETRY_DELAY_S) from dlq_error
        raise RejectMessage()

    return ExceptionMiddleware(handlers={Exception: on_error})


class NackFirstDelivery(BaseMiddleware):
    """Fault injection (``TRANCHE_FAULT=nack_first_delivery``): a redelivery storm. Every
    message's first delivery is nacked before the handler sees it, so each one is handled on a
    redelivery, interleaved with the other messages' first deliveries."""

    async def consume_scope(self, call_next, msg):
        if delivery_of(msg).num_delivered == 1:
            FAULT_NACKS.labels(msg.raw_message.subject.split(".")[1]).inc()
            raise NackMessage(delay=0.1)
        return await call_next(msg)


def one_at_a_time_per_subject() -> type[BaseMiddleware]:
    """Per-bot order with concurrent handlers: messages on one subject (one bot: the subject's
    last token) are handled one after the other, in the order they were fetched; different
    subjects run side by side. FastStream's workers take fetched messages from a queue in fetch
    order and nothing before this middleware suspends, so they queue on the subject's lock
    (first in, first out) in that order."""
    locks: dict[str, asyncio.Lock] = {}
    users: dict[str, int] = {}

    class OneAtATimePerSubject(BaseMiddleware):
        async def consume_scope(self, call_next, msg):
            subject = msg.raw_message.subject
            lock = locks.setdefault(subject, asyncio.Lock())
            users[subject] = users.get(subject, 0) + 1
            try:
                async with lock:
                    return await call_next(msg)
            finally:
                users[subject] -= 1
                if not users[subject]:
                    del users[subject], locks[subject]

    return OneAtATimePerSubject


class TrancheRouter(NatsRouter):
    """A service's router; ``concurrency`` is how many messages each durable consumer fetches
    and handles at once (:func:`durable`); ``consumers`` are its durable consumers, which the
    service makes again if the server loses them (shared/healing.py)."""

    concurrency: int = 1
    consumers: tuple[Consumer, ...] = ()


def make_router(
    dead_letters: DeadLetters,
    max_deliver: int = Consumer.max_deliver,
    nack_first: bool = False,
    concurrency: int = 1,
) -> TrancheRouter:
    """The router a service's business subscribers hang on (the DLQ middleware wraps them only:
    on the broker it would also wrap, and recurse into, the dead-letter path)."""
    storm = [NackFirstDelivery] if nack_first else []
    router = TrancheRouter(
        middlewares=[
            one_at_a_time_per_subject(),
            dead_letter_middleware(dead_letters, max_deliver),
            *storm,
        ]
    )
    router.concurrency = concurrency
    return router


def durable(router: NatsRouter, consumer: Consumer, **kwargs: Any):
    """Subscribe a handler to a durable pull consumer: up to the router's ``concurrency``
    messages handled at once, one at a time per subject (per-bot order)."""
    if isinstance(router, TrancheRouter):
        router.consumers = (*router.consumers, consumer)
    return router.subscriber(
        consumer.filter_subject,
        stream=JStream(consumer.stream.name, declare=False),
        durable=consumer.durable,
        config=consumer.config(),
        # One message per fetch: with batch_size > 1, FastStream 0.7.8's pull loop dies on an
        # idle fetch's asyncio.TimeoutError and its supervisor restarts it only after a backoff
        # (stalls of 30 s and more were seen). Workers overlap the handling instead.
        pull_sub=PullSub(batch_size=1, timeout=1.0),
        max_workers=getattr(router, "concurrency", 1),
        ack_policy=AckPolicy.REJECT_ON_ERROR,
        **kwargs,
    )


def servers(nats_url: str) -> list[str]:
    """``TRANCHE_NATS_URL`` may name several servers of one cluster, comma-separated: the client
    tries them in turn and fails over between them (nats-py takes a list, not such a string)."""
    return [url.strip() for url in nats_url.split(",") if url.strip()]


def make_broker(nats_url: str, service: str, auth: dict[str, str] | None = None) -> NatsBroker:
    """The FastStream broker; ``auth`` is the service's NATS user and password, if any."""
    security = SASLPlaintext(username=auth["user"], password=auth["password"]) if auth else None
    return NatsBroker(
        servers(nats_url),
        security=security,
        # Messages received and processed, handler duration and errors per subject, on /metrics.
        middlewares=[NatsPrometheusMiddleware(registry=REGISTRY, app_name=f"tranche-{service}")],
        connect_timeout=2,
        reconnect_time_wait=1,
        max_reconnect_attempts=-1,
        ping_interval=PING_INTERVAL_S,
        max_outstanding_pings=MAX_OUTSTANDING_PINGS,
        error_cb=_log_nats_error,
        # A plain stdlib logger: its lines reach the root handler and come out as JSON. The
        # per-message "Received"/"Processed" lines are debug: our handlers log what happened.
        logger=logging.getLogger("faststream.tranche"),
        log_level=logging.DEBUG,
    )


async def _log_nats_error(error: Exception) -> None:
    # nats-py's default logs a full traceback for every failed (re)connect attempt.
    log.warning("nats.error", error=f"{type(error).__name__}: {error}")


async def connect(
    nats_url: str,
    name: str,
    errors: list[Exception] | None = None,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
    **auth: str,
) -> NatsClient:
    """A plain nats-py connection for stream setup, outbox publishing and key-value access;
    ``auth`` is ``user=``/``password=`` of the service's NATS user, if any. Every error the
    client reports is logged and, if given, appended to ``errors``; ``on_reconnect`` runs after
    every reconnect."""

    async def on_error(error: Exception) -> None:
        if errors is not None:
            errors.append(error)
        await _log_nats_error(error)

    return await nats.connect(
        servers(nats_url),
        name=name,
        **auth,
        connect_timeout=2,
        reconnect_time_wait=1,
        max_reconnect_attempts=-1,
        ping_interval=PING_INTERVAL_S,
        max_outstanding_pings=MAX_OUTSTANDING_PINGS,
        error_cb=on_error,
        **({"reconnected_cb": on_reconnect} if on_reconnect else {}),
    )


def outbox_publisher(
    nc: NatsClient,
    timeout: float = 5.0,
    sign: Callable[[str, bytes], dict[str, str]] | None = None,
):
    """Publish a batch of outbox rows in their order: JetStream messages with their id, key-value
    puts (a publish on the bucket's ``$KV.<bucket>.<key>`` subject, what ``kv.put`` sends).
    ``sign`` adds headers that sign each message (safety's or the executor's, shared/signing.py).

    Pipelined: every row is sent before any acknowledgement is awaited (one round trip per
    batch, not per row), in order on one connection, so the server stores them in order. Raises
    :class:`~shared.outbox.BatchFailed` naming how many leading rows were confirmed."""
    js = nc.jetstream()

    async def publish(rows: list[Pending]) -> None:
        acks = []
        try:
            for row in rows:
                stream = f"KV_{row.kv_bucket}" if row.kv_bucket else stream_for(row.subject).name
                # A put carries its id too: a second copy (another relay of the same outbox, slow
                # between its read and its publish) is dropped instead of putting an older value
                # back in the bucket.
                headers = {"Nats-Msg-Id": row.message_id}
                payload = row.payload.encode()
                if sign is not None:
                    headers |= sign(row.subject, payload)
                acks.append(
                    await js.publish_async(row.subject, payload, stream=stream, headers=headers)
                )
        except Exception as error:
            await _confirmed_prefix(acks, timeout, error)
            raise  # unreachable: _confirmed_prefix raises
        await _confirmed_prefix(acks, timeout, None)

    return publish


async def _confirmed_prefix(
    acks: list[asyncio.Future[Any]], timeout: float, send_error: Exception | None
) -> None:
    """Wait for the acknowledgements; raise BatchFailed with the number of leading rows the
    server confirmed if any failed, timed out, or (``send_error``) could not be sent."""
    done: set[asyncio.Future[Any]] = set()
    if acks:
        done, _ = await asyncio.wait(acks, timeout=timeout)
    for n, ack in enumerate(acks):
        if ack not in done:
            for pending in acks[n:]:
                pending.cancel()
            raise BatchFailed(n) from TimeoutError(f"no acknowledgement within {timeout:g} s")
        if ack.exception() is not None:
            raise BatchFailed(n) from ack.exception()
    if send_error is not None:
        raise BatchFailed(len(acks)) from send_error
