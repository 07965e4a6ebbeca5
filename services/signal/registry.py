"""Writing the ``tranche_bots`` bucket: the only place that does (the signal service owns bots).

Every write is a compare-and-set on the bot's revision, so two operators changing one bot at once
cannot silently overwrite each other: the second gets :class:`BotConflict`. After the write the
new revision is applied to the live catalog at once (the answer reflects it) and its
``tranche.bots.changed`` announcement is staged in the outbox; on start every revision in the
bucket is staged again (by its id, so an announcement lost to a crash between the bucket write
and the outbox goes out, and one already sent is not sent twice).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.errors import MaxPayloadError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from sqlmodel import Session

from services.signal.bots import check_bot
from shared import subjects
from shared.bots import BotRecord, BotState, LiveCatalog, announcement, read_bucket
from shared.catalog import Bot
from shared.contracts import BotChange, BotStatus
from shared.logging import get_logger
from shared.money import utc_now
from shared.outbox import stage

log = get_logger("tranche.signal")


POSITION_FIELDS = ("product_id", "exit_allocation")
"""Fields that change what a bot's open position means: the asset it holds, and how the ledger
splits its exits across tranches (the whole book is recomputed with the bot's allocation)."""


class BotError(Exception):
    """A refused change: an HTTP status, a stable code and one sentence."""

    status = 400
    code = "BOT_REFUSED"

    def __init__(self, message: str, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status


class BotNotFound(BotError):
    status, code = 404, "BOT_NOT_FOUND"


class BotConflict(BotError):
    status, code = 409, "BOT_CONFLICT"


class BotInvalid(BotError):
    status, code = 422, "BOT_INVALID"


Transact = Callable[[Callable[[Session], Any]], Any]


class BotRegistry:
    def __init__(self, live: LiveCatalog, transact: Transact):
        self.live = live
        self._transact = transact
        self._bucket: Any = None
        self._nc: NatsClient | None = None

    async def connect(self, nc: NatsClient) -> None:
        self._nc = nc
        self._bucket = await nc.jetstream().key_value(subjects.BOTS_BUCKET)

    # -- reading ---------------------------------------------------------------------------------

    def current(self, bot_id: str) -> BotState:
        state = self.live.state(bot_id)
        if state is None:
            raise BotNotFound(f"no bot named {bot_id!r}")
        return state

    def validate(self, bot_id: str, config: Bot) -> None:
        try:
            check_bot(bot_id, config, self.live.products)
        except ValueError as error:
            raise BotInvalid(str(error)) from None

    # -- writing ---------------------------------------------------------------------------------

    async def create(self, bot_id: str, config: Bot, by: str) -> BotState:
        """A new bot, active; a bot of that name that is not removed is a conflict."""
        self.validate(bot_id, config)
        if self.live.state(bot_id) is not None:
            raise BotConflict(f"bot {bot_id} exists: change it with PUT", "BOT_EXISTS")
        # A removed bot's record is still there: replace exactly that revision.
        last = self.live.revision(bot_id) or 0
        record = self._record(bot_id, config, "active", "created", by)
        return await self._write(record, last)

    async def change(
        self,
        bot_id: str,
        config: Bot,
        by: str,
        holds_position: Callable[[str], Awaitable[str | None]],
        expected_revision: int | None = None,
    ) -> BotState:
        """Replace a bot's whole config (its status stays); ``expected_revision`` (If-Match)
        refuses the change when the bot moved on since the caller read it. A change of what
        the bot's position means (:data:`POSITION_FIELDS`) is refused while ``holds_position``
        gives a reason, as a removal is: the next exit would sell another asset."""
        current = self.current(bot_id)
        self.validate(bot_id, config)
        last = self._expect(current, expected_revision)
        moved = [
            name
            for name in POSITION_FIELDS
            if getattr(config, name) != getattr(current.config, name)
        ]
        if moved:
            reason = await holds_position(bot_id)
            if reason is not None:
                raise BotConflict(
                    f"{', '.join(moved)} cannot change now: {reason}", "POSITION_OPEN"
                )
        record = self._record(bot_id, config, current.status, "changed", by)
        return await self._write(record, last)

    async def set_status(self, bot_id: str, status: BotStatus, by: str) -> tuple[BotState, bool]:
        """Pause or resume; (state, whether anything changed). Pausing a paused bot is no
        change (nothing written, nothing announced)."""
        current = self.current(bot_id)
        if current.status == status:
            return current, False
        change: BotChange = "paused" if status == "paused" else "resumed"
        record = self._record(bot_id, current.config, status, change, by)
        return await self._write(record, self._expect(current, None)), True

    async def remove(
        self,
        bot_id: str,
        by: str,
        holds_position: Callable[[str], Awaitable[str | tuple[str, str] | None]],
        expected_revision: int | None = None,
    ) -> BotState:
        """Remove a bot (it stops at once); refused while ``holds_position`` gives a reason (a
        sentence: ``POSITION_OPEN``; or a code and a sentence)."""
        current = self.current(bot_id)
        last = self._expect(current, expected_revision)
        refusal = await holds_position(bot_id)
        if refusal is not None:
            code, reason = refusal if isinstance(refusal, tuple) else ("POSITION_OPEN", refusal)
            raise BotConflict(reason, code)
        record = self._record(bot_id, current.config, "removed", "removed", by)
        return await self._write(record, last)

    async def seed(self, file_bots: dict[str, Bot], reseed: bool) -> list[str]:
        """Put the file's bots in the bucket: those it has never held, or (``reseed``) all of
        them, replacing what the bucket has. Returns the ids written. Another instance seeding at
        the same time is no error: one write wins, the other finds the key taken."""
        if self._nc is None:
            raise BotError("not connected to NATS yet", "NOT_READY")
        held = await read_bucket(self._nc)
        written = []
        for bot_id, config in file_bots.items():
            if bot_id in held and not reseed:
                continue
            record = self._record(bot_id, config, "active", "created", "bots file")
            last = held[bot_id][1] if bot_id in held else 0
            try:
                await self._write(record, last)
            except BotConflict:
                log.info("bot.seeded_elsewhere", bot_id=bot_id)
                continue
            written.append(bot_id)
        return written

    async def load(self, nc: NatsClient) -> int:
        """Read the whole bucket into the live catalog now (before any message is handled) and
        stage the announcement of every revision in it; returns how many records."""
        held = await read_bucket(nc)
        for record, revision in held.values():
            await self.live.apply(record, revision)

        def announce_all(session: Session) -> None:
            for record, revision in held.values():
                stage(session, subjects.BOTS_CHANGED, announcement(record, revision))

        await self._transact(announce_all)
        return len(held)

    # -- helpers ---------------------------------------------------------------------------------

    def _expect(self, current: BotState, expected: int | None) -> int:
        if current.revision is None:
            raise BotConflict(
                f"bot {current.bot_id} is not in the bucket yet (the signal service seeds it on "
                "start): try again",
                "BOT_NOT_SEEDED",
            )
        if expected is not None and expected != current.revision:
            raise BotConflict(
                f"bot {current.bot_id} is at revision {current.revision}, not {expected}: read it "
                "again and retry",
            )
        return current.revision

    @staticmethod
    def _record(
        bot_id: str, config: Bot, status: BotStatus, change: BotChange, by: str
    ) -> BotRecord:
        return BotRecord(
            bot_id=bot_id,
            config=config,
            status=status,
            change=change,
            changed_at=utc_now(),
            changed_by=by[:64] or "operator",
        )

    async def _write(self, record: BotRecord, last: int) -> BotState:
        if self._bucket is None:
            raise BotError("not connected to NATS yet", "NOT_READY")
        try:
            if last:
                revision = await self._bucket.update(
                    record.bot_id, record.model_dump_json().encode(), last=last
                )
            else:
                revision = await self._bucket.create(
                    record.bot_id, record.model_dump_json().encode()
                )
        except KeyWrongLastSequenceError:
            raise BotConflict(
                f"bot {record.bot_id} was changed by someone else meanwhile: read it again and "
                "retry"
            ) from None
        except KeyNotFoundError:
            raise BotNotFound(f"no bot named {record.bot_id!r}") from None
        except MaxPayloadError:
            raise BotError(
                f"bot {record.bot_id} is too large to store (over NATS's max payload)",
                "BODY_TOO_LARGE",
                status=413,
            ) from None
        await self.live.apply(record, revision)
        message = announcement(record, revision)
        await self._transact(lambda session: stage(session, subjects.BOTS_CHANGED, message))
        log.info(
            "bot.written",
            bot_id=record.bot_id,
            change=record.change,
            revision=revision,
            changed_by=record.changed_by,
        )
        state = self.live.state(record.bot_id)
        return state or BotState.of(record, revision)
