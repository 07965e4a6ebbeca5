"""Following the ``tranche_positions`` bucket: the ledger writes it, the others watch it.

One watcher for every service that needs the latest position per bot, so the handling of the
initial values, deletes and unreadable entries is the same everywhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NatsClient

from shared import subjects
from shared.contracts import PositionUpdate
from shared.following import keep_following
from shared.logging import get_logger

log = get_logger(__name__)


async def watch_positions(
    nc: NatsClient,
    on_position: Callable[[PositionUpdate], Awaitable[None]],
    on_synced: Callable[[], None] | None = None,
    retry_s: float = 1.0,
) -> None:
    """Call ``on_position`` for every position in the bucket, then for every update, until
    cancelled. ``on_synced`` runs once the initial values are in (from then on a missing key means
    a flat bot). Deletes are skipped; an unreadable entry is logged and skipped. A watch that fails
    (or an ``on_position`` that raises) is started again, so every position is offered again:
    ``on_position`` must keep the newer by ``sequence``, as every caller does."""
    await keep_following(lambda: _watch_positions(nc, on_position, on_synced), "positions", retry_s)


async def _watch_positions(
    nc: NatsClient,
    on_position: Callable[[PositionUpdate], Awaitable[None]],
    on_synced: Callable[[], None] | None,
) -> None:
    bucket = await nc.jetstream().key_value(subjects.POSITIONS_BUCKET)
    watcher = await bucket.watchall()
    async for entry in watcher:
        if entry is None:
            if on_synced is not None:
                on_synced()
            continue
        if entry.value is None or entry.operation is not None:
            continue
        try:
            position = PositionUpdate.model_validate_json(entry.value)
        except ValueError as error:
            log.warning("position.unreadable", key=entry.key, error=str(error))
            continue
        await on_position(position)
