"""The services' storage and bots stood in for in one process: an in-memory SQLite database per
service (its tables and its outbox, drained in order instead of relayed to NATS) and the bots of
the file as the signal service runs them. Used by the backtest, the outcome ring and the signal
unit tests."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine

from services.signal.bots import RunningBot, runtime_for
from shared.bots import BotState
from shared.catalog import Bot
from shared.db import create_tables
from shared.money import utc_now
from shared.outbox import OutboxMessage, staged_in

T = TypeVar("T")


def memory_engine(tables: list[type[SQLModel]]) -> Engine:
    """A private in-memory SQLite database with ``tables`` (and the outbox) created."""
    engine = create_engine(
        "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
    )
    create_tables(engine, [OutboxMessage, *tables])
    return engine


@dataclass(frozen=True, slots=True)
class Staged:
    """A message a handler staged in its outbox, as the relay would publish it."""

    id: int
    subject: str
    payload: str


_OUTBOX = OutboxMessage.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
_PENDING = (
    select(_OUTBOX.c.id, _OUTBOX.c.subject, _OUTBOX.c.payload)
    .where(_OUTBOX.c.id > bindparam("after"))
    .order_by(_OUTBOX.c.id)
)
_MARK_SENT = (
    update(_OUTBOX)
    .where(_OUTBOX.c.id > bindparam("after"), _OUTBOX.c.id <= bindparam("upto"))
    .values(published_at=bindparam("now"))
)


class MemoryStore:
    """What a handler needs of ``shared.service.Service``: ``engine``, ``transact`` and ``read``,
    run inline (no worker thread: one process, one caller at a time). :meth:`drain` hands back
    the messages staged since the last drain, in the order the relay would publish them."""

    def __init__(self, tables: list[type[SQLModel]]):
        self.engine = memory_engine(tables)
        self._drained = 0
        self._staged = False
        """Whether a transaction staged a message since the last drain (as the service's
        ``transact`` wakes its relay: what ``shared.outbox.stage`` marks on the session)."""

    async def transact(self, change: Callable[[Session], T]) -> T:
        with Session(self.engine, expire_on_commit=False) as session:
            result = change(session)
            session.commit()
            self._staged = self._staged or staged_in(session)
            return result

    async def read(self, query: Callable[[Session], T]) -> T:
        with Session(self.engine) as session:
            return query(session)

    def drain(self) -> list[Staged]:
        if not self._staged:
            return []  # nothing staged: no query (the backtest asks after every handler)
        self._staged = False
        # Core statements (compiled once, cached by SQLAlchemy), no ORM objects: the rows are
        # read for their subject and payload only, and marked sent as the relay marks them.
        with self.engine.begin() as connection:
            staged = [
                Staged(row.id, row.subject, row.payload)
                for row in connection.execute(_PENDING, {"after": self._drained})
            ]
            if staged:
                connection.execute(
                    _MARK_SENT,
                    {"after": self._drained, "upto": staged[-1].id, "now": utc_now()},
                )
        if staged:
            self._drained = staged[-1].id
        return staged


class InlineExecutor(ThreadPoolExecutor):
    """An event loop's default executor that runs each call at once in the caller's thread: the
    executor's ``asyncio.to_thread`` calls (its claims, the exchange) cost a thread hop each,
    which in one process with one caller at a time buys nothing. ``loop.set_default_executor``
    takes only a ``ThreadPoolExecutor``, hence the base class (its threads are never started)."""

    def submit(self, fn, /, *args, **kwargs):
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # handed to the awaiting caller, as a thread would
            future.set_exception(error)
        return future


@dataclass
class FixedBots:
    """The signal service's roster for bots that do not change during the run."""

    running: dict[str, RunningBot] = field(default_factory=dict)
    _trading: dict[str, list[tuple[str, RunningBot]]] = field(default_factory=dict)
    """Per product, its bots in the roster's order: asked twice a tick, changed only by add."""

    def add(self, bot_id: str, bot: Bot, status: str = "active") -> RunningBot:
        running = RunningBot(BotState(bot_id, bot, status, 1), runtime_for(bot_id, bot))  # type: ignore[arg-type]  # status is a BotStatus literal; callers pass one
        self.running[bot_id] = running
        self._trading.clear()
        return running

    def get(self, bot_id: str) -> RunningBot | None:
        return self.running.get(bot_id)

    def trading(self, product_id: str) -> list[tuple[str, RunningBot]]:
        found = self._trading.get(product_id)
        if found is None:
            found = [(b, r) for b, r in self.running.items() if r.config.product_id == product_id]
            self._trading[product_id] = found
        return found
