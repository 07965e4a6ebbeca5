"""Bots at run time: the ``tranche_bots`` bucket and a live catalog that follows it.

The bucket (key = bot id) is the one source of truth while the system runs; only the signal
service writes it. The bots file seeds it: a bot of the file that the bucket has never held is
created there on the signal service's start; from then on the bucket wins (see docs/bots.md).
A removed bot stays in the bucket as a record with status ``removed``, so a restart does not bring
it back from the file, and every change (removals included) can be announced from its record.

:class:`LiveCatalog` gives every service the same view: products from the file, bots from the
bucket, updated as the bucket changes. A bot of the file that the bucket does not hold (yet) is
in the view as the file says, so a service works before the signal service has seeded it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from nats.aio.client import Client as NatsClient
from pydantic import StringConstraints, ValidationError

from shared import subjects
from shared.catalog import Bot, Catalog, Product
from shared.contracts import (
    SCHEMA_VERSION,
    BotChange,
    BotChanged,
    BotStatus,
    Contract,
    Token,
)
from shared.following import keep_following
from shared.logging import get_logger
from shared.money import UtcTime

log = get_logger(__name__)

Operator = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class BotRecord(Contract):
    """The value stored under a bot's key: its whole config, its status and the last change."""

    schema_version: Literal[1] = SCHEMA_VERSION
    bot_id: Token
    config: Bot
    status: BotStatus = "active"
    change: BotChange
    changed_at: UtcTime
    changed_by: Operator


@dataclass(frozen=True)
class BotState:
    """A bot as a service sees it now. ``revision`` is None for a bot known only from the file
    (the bucket not read yet, or the signal service has not seeded it yet)."""

    bot_id: str
    config: Bot
    status: BotStatus
    revision: int | None
    changed_at: datetime | None = None
    changed_by: str | None = None
    change: BotChange | None = None

    @property
    def paused(self) -> bool:
        return self.status == "paused"

    @classmethod
    def of(cls, record: BotRecord, revision: int) -> BotState:
        return cls(
            bot_id=record.bot_id,
            config=record.config,
            status=record.status,
            revision=revision,
            changed_at=record.changed_at,
            changed_by=record.changed_by,
            change=record.change,
        )


def announcement(record: BotRecord, revision: int) -> BotChanged:
    """The ``tranche.bots.changed`` message for one revision of a bot. Its id is derived from the
    bot and revision, so announcing the same revision twice sends one message."""
    message_id = f"bot-{record.bot_id}-r{revision}"
    return BotChanged(
        message_id=message_id,
        correlation_id=message_id,
        time=record.changed_at,
        bot_id=record.bot_id,
        change=record.change,
        revision=revision,
        status=record.status,
        changed_by=record.changed_by,
    )


Listener = Callable[[str, BotState | None, BotState | None], Awaitable[None]]
"""Called with (bot id, before, after) when a bot appears, changes or goes (``None``)."""


class LiveCatalog:
    """Products from the file, bots from the ``tranche_bots`` bucket, kept current by
    :meth:`follow`. ``bots`` maps every bot that is not removed (paused ones included) to its
    config; ``states`` adds status and revision. A bot of the file that the bucket does not hold
    is there as the file says (revision None); a record in the bucket replaces it."""

    def __init__(self, catalog: Catalog):
        self.products: dict[str, Product] = dict(catalog.products)
        self.states: dict[str, BotState] = {
            bot_id: BotState(bot_id, bot, "active", None) for bot_id, bot in catalog.bots.items()
        }
        self.bots: dict[str, Bot] = dict(catalog.bots)
        self.all_bots: dict[str, Bot] = dict(catalog.bots)
        """``bots`` and the bots removed at run time (their last config): a removed bot's fills
        and positions stay reportable."""
        self._revisions: dict[str, int] = {}
        self._listeners: list[Listener] = []
        self.synced = asyncio.Event()
        """Set once :meth:`follow` has read the whole bucket."""

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def state(self, bot_id: str) -> BotState | None:
        return self.states.get(bot_id)

    def revision(self, bot_id: str) -> int | None:
        """The latest revision seen of the bot's key (removed records included)."""
        return self._revisions.get(bot_id)

    async def apply(self, record: BotRecord, revision: int) -> bool:
        """Take one revision of a bot; an older or repeated revision changes nothing. A bot of an
        unknown product is refused (logged): this service could not size or book it."""
        if revision <= self._revisions.get(record.bot_id, 0):
            return False
        if record.status != "removed" and record.config.product_id not in self.products:
            log.warning(
                "bot.unknown_product", bot_id=record.bot_id, product_id=record.config.product_id
            )
            return False
        self._revisions[record.bot_id] = revision
        before = self.states.get(record.bot_id)
        after = None if record.status == "removed" else BotState.of(record, revision)
        self._set(record.bot_id, after)
        if after is None and record.config.product_id in self.products:
            self.all_bots = {**self.all_bots, record.bot_id: record.config}
        for listener in self._listeners:
            await listener(record.bot_id, before, after)
        return True

    def _set(self, bot_id: str, state: BotState | None) -> None:
        states = dict(self.states)
        if state is None:
            states.pop(bot_id, None)
        else:
            states[bot_id] = state
        # Rebind rather than mutate: a reader iterating the old dict across an await is safe.
        self.states = states
        self.bots = {name: found.config for name, found in states.items()}
        self.all_bots = {**self.all_bots, **self.bots}

    async def follow(self, nc: NatsClient, retry_s: float = 1.0) -> None:
        """Apply every record in the bucket, then every change, until cancelled. Unreadable
        entries are skipped (logged); a watch that fails is started again (revisions already
        applied are skipped), so the view never silently stops following."""
        await keep_following(lambda: self._watch(nc), "bots", retry_s)

    async def _watch(self, nc: NatsClient) -> None:
        bucket = await nc.jetstream().key_value(subjects.BOTS_BUCKET)
        watcher = await bucket.watchall()
        async for entry in watcher:
            if entry is None:
                self.synced.set()
                continue
            if entry.value is None or entry.operation is not None or entry.revision is None:
                continue  # a purge or a raw delete: never written by Tranche
            record = read_record(entry.key, entry.value)
            if record is not None:
                await self.apply(record, entry.revision)


def read_record(key: str, value: bytes) -> BotRecord | None:
    try:
        record = BotRecord.model_validate_json(value)
    except (ValidationError, ValueError) as error:
        log.warning("bot.unreadable", key=key, error=str(error)[:300])
        return None
    if record.bot_id != key:
        log.warning("bot.key_mismatch", key=key, bot_id=record.bot_id)
        return None
    return record


async def read_bucket(nc: NatsClient) -> dict[str, tuple[BotRecord, int]]:
    """Every bot record now in the bucket (removed ones included) with its revision: a snapshot
    for commands that run once (``tranche ledger rebuild``) and for seeding."""
    bucket = await nc.jetstream().key_value(subjects.BOTS_BUCKET)
    watcher = await bucket.watchall()
    found: dict[str, tuple[BotRecord, int]] = {}
    try:
        async for entry in watcher:
            if entry is None:
                break
            if entry.value is None or entry.operation is not None or entry.revision is None:
                continue
            record = read_record(entry.key, entry.value)
            if record is not None:
                found[entry.key] = (record, entry.revision)
    finally:
        await watcher.stop()
    return found
