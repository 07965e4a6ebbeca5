"""Transactional outbox (DESIGN.md, promise 2).

A handler stages the messages its state change must send in the *same* database transaction as
the change (:func:`stage`). After the commit the :class:`OutboxRelay` publishes them in order with
``Nats-Msg-Id`` set to the message id, a batch at a time (pipelined: one round trip per batch),
and marks the confirmed ones sent in one transaction; it also runs on a timer, so after a
crash between the commit and the publish the message still goes out, and JetStream's duplicate
window (plus every consumer's own idempotency) drops the second copy when a publish was
confirmed by the server but not yet marked sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import NamedTuple

from prometheus_client import Counter, Gauge
from sqlalchemy import Engine, bindparam
from sqlalchemy import select as core_select
from sqlalchemy import update as core_update
from sqlmodel import Field, Session, SQLModel, col, select

from shared.contracts import Envelope
from shared.db import READ_ONLY, InsertUnlessThere, UtcDateTime
from shared.logging import get_logger
from shared.money import utc_now

log = get_logger(__name__)

PUBLISHED = Counter("tranche_outbox_published_total", "Outbox messages published", ["kind"])
PENDING = Gauge("tranche_outbox_pending", "Outbox messages stored but not yet published")


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(index=True, unique=True, max_length=200)
    subject: str = Field(max_length=300)
    payload: str
    kv_bucket: str | None = Field(default=None, max_length=100)
    kv_key: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utc_now, sa_type=UtcDateTime)
    published_at: datetime | None = Field(default=None, index=True, sa_type=UtcDateTime)


_OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
_STAGE = InsertUnlessThere(_OUTBOX, ["message_id"])
"""Stages a message and keeps the first of two with one id, in one statement: a query for the
id, then an ORM object flushed at the commit, cost two round trips and a unit of work."""


def _insert(session: Session, rows: list[dict[str, object]]) -> None:
    # A row staged through the ORM (``session.add``) and not flushed yet goes first, so that
    # the rows keep the order they were staged in, which is the order they are published in.
    if any(isinstance(row, OutboxMessage) for row in session.new):
        session.flush()
    now = utc_now()
    _STAGE(session, [{"kv_bucket": None, "kv_key": None, **row, "created_at": now} for row in rows])
    session.info[_STAGED] = True


_STAGED = "tranche_outbox_staged"


def staged_in(session: Session) -> bool:
    """Whether anything was staged in the session (its transaction has something to publish)."""
    return bool(session.info.get(_STAGED))


def stage(session: Session, subject: str, message: Envelope) -> None:
    """Stage a durable message; staging the same message id twice keeps the first."""
    row: dict[str, object] = {"message_id": message.message_id, "subject": subject}
    _insert(session, [row | {"payload": message.model_dump_json()}])


def stage_with_put(
    session: Session,
    subject: str,
    message: Envelope,
    bucket: str,
    key: str,
    payload: str | None = None,
) -> None:
    """Stage a durable message and, right after it, the same message as the value of ``key`` in
    the key-value ``bucket`` (the positions bucket), with the id ``kv-<message id>``, in one
    statement; staging either id twice keeps the first. ``payload``: the message as JSON, when
    the caller has made it already."""
    if payload is None:
        payload = message.model_dump_json()
    message_id = message.message_id
    row: dict[str, object] = {"message_id": message_id, "subject": subject, "payload": payload}
    put = {"message_id": f"kv-{message_id}", "subject": f"$KV.{bucket}.{key}",
           "kv_bucket": bucket, "kv_key": key}  # fmt: skip
    _insert(session, [row, row | put])


class BatchFailed(Exception):
    """A batch publish failed after its first ``confirmed`` rows were confirmed by the server;
    the cause is chained. Only those rows are marked sent: the rest stay pending, in order."""

    def __init__(self, confirmed: int):
        super().__init__(f"published {confirmed} of a batch, then failed")
        self.confirmed = confirmed


class Pending(NamedTuple):
    """A staged message as the relay reads and publishes it: the columns it needs, read with one
    Core statement (ORM objects, built and then expunged, cost more than the read)."""

    id: int
    message_id: str
    subject: str
    payload: str
    kv_bucket: str | None
    kv_key: str | None


_COLUMNS = (
    _OUTBOX.c.id, _OUTBOX.c.message_id, _OUTBOX.c.subject, _OUTBOX.c.payload, _OUTBOX.c.kv_bucket,
    _OUTBOX.c.kv_key,
)  # fmt: skip
_PENDING = core_select(*_COLUMNS).where(_OUTBOX.c.published_at.is_(None)).order_by(_OUTBOX.c.id)
_SINCE = (
    core_select(*_COLUMNS)
    .where(_OUTBOX.c.created_at >= bindparam("since"), _OUTBOX.c.id > bindparam("after"))
    .order_by(_OUTBOX.c.id)
)
_MARK_SENT = (
    core_update(_OUTBOX)
    .where(_OUTBOX.c.id.in_(bindparam("ids", expanding=True)), _OUTBOX.c.published_at.is_(None))
    .values(published_at=bindparam("now"))
)

Publish = Callable[[list[Pending]], Awaitable[None]]
"""Publishes rows in order; raises :class:`BatchFailed` if not all were confirmed."""


class OutboxRelay:
    """Publishes staged messages in the order they were staged, then marks them sent."""

    def __init__(self, engine: Engine, publish: Publish, fault: str = "", batch: int = 200):
        self._engine = engine
        # Reading what is pending takes no write lock (safety's SQLite begins its writers with
        # BEGIN IMMEDIATE): the relay's every pass queued behind decisions, and they behind it.
        self._reader = engine.execution_options(**{READ_ONLY: True})
        self._publish = publish
        self._fault = fault
        self._batch = batch
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._select_pending = _PENDING.limit(batch)

    def _pending(self) -> list[Pending]:
        with self._reader.connect() as connection:
            return [Pending(*row) for row in connection.execute(self._select_pending)]

    def _mark_sent(self, row_ids: list[int]) -> None:
        """One transaction for the whole batch (a commit per row cost a disk sync per row)."""
        with self._engine.begin() as connection:
            connection.execute(_MARK_SENT, {"ids": row_ids, "now": utc_now()})

    def pending_count(self) -> int:
        with Session(self._engine) as session:
            return len(
                session.exec(
                    select(OutboxMessage.id).where(col(OutboxMessage.published_at).is_(None))
                ).all()
            )

    async def flush(self) -> int:
        """Publish everything pending; returns how many were published. Raises on a failed publish
        (what failed stays pending and goes out on the next flush)."""
        async with self._lock:
            sent = 0
            while True:
                rows = await asyncio.to_thread(self._pending)
                if not rows:
                    PENDING.set(0)
                    return sent
                PENDING.set(len(rows))
                more = len(rows) == self._batch
                if self._fault == "crash_before_publish":
                    log.warning("fault.crash_before_publish", pending=len(rows))
                    os._exit(86)
                failure: BaseException | None = None
                try:
                    await self._publish(rows)
                    confirmed = len(rows)
                except BatchFailed as error:
                    confirmed, failure = error.confirmed, error.__cause__ or error
                if confirmed:
                    ids = [row.id for row in rows[:confirmed]]
                    await asyncio.to_thread(self._mark_sent, ids)
                for row in rows[:confirmed]:
                    PUBLISHED.labels("kv" if row.kv_bucket else "message").inc()
                sent += confirmed
                if failure is not None:
                    raise failure
                if not more:
                    # Less than a batch was pending: nothing more was then. What a handler
                    # staged since woke the relay again (its commit comes before its wake), so
                    # reading again now would cost a read of nothing per flush.
                    PENDING.set(0)
                    return sent

    def wake(self) -> None:
        """Ask the background loop to flush now (after a handler committed)."""
        self._wake.set()

    async def run(self, poll_s: float) -> None:
        """Flush on every wake-up and at least every ``poll_s`` seconds until cancelled."""
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that arrives as the wait finishes, and Service.stop() then waited here forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # keep relaying; the row stays pending
                log.warning("outbox.publish_failed", error=str(error))


async def replay_since(engine: Engine, since: datetime, publish: Publish, batch: int = 200) -> int:
    """Re-publish every row staged at or after ``since``, sent or not, in staged order with its
    original message id (``tranche outbox replay``: refilling streams NATS lost). Marks nothing:
    what was pending stays pending for the relay, which JetStream then deduplicates."""
    after_id, sent = 0, 0
    while True:

        def page(after: int = after_id) -> list[Pending]:
            with engine.connect() as connection:
                found = connection.execute(_SINCE.limit(batch), {"since": since, "after": after})
                return [Pending(*row) for row in found]

        rows = await asyncio.to_thread(page)
        if not rows:
            return sent
        await publish(rows)
        sent += len(rows)
        after_id = rows[-1].id
