"""The board's only input: a core-NATS subscription to ``tranche.>`` and a first read of the
``tranche_positions`` bucket. Shared by the web dashboard and the terminal view.

Reading never changes anything (DESIGN.md, promise 8): a core subscription sees every publish
(JetStream ones included) without creating a stream consumer, and the bucket is only read.
"""

from __future__ import annotations

from collections.abc import Callable

import nats
import nats.errors
from nats.aio.subscription import Subscription

from services.dashboard.board import Board
from shared import subjects as s


async def load_positions(nc: nats.NATS, board: Board) -> None:
    """Show positions stored before the view started; a missing bucket just means none yet."""
    # nats.errors.Error covers BucketNotFoundError, NoKeysError (an empty bucket), KeyNotFoundError
    # (deleted between keys() and get()) and a server without JetStream: the live feed still works.
    try:
        kv = await nc.jetstream().key_value(s.POSITIONS_BUCKET)
        keys = await kv.keys()
    except (nats.errors.Error, TimeoutError):
        return
    for key in keys:
        try:
            entry = await kv.get(key)
        except (nats.errors.Error, TimeoutError):
            continue
        if entry.value:
            board.apply(s.for_token(s.LEDGER_POSITIONS, key), entry.value)


async def follow(
    nc: nats.NATS, board: Board, changed: Callable[[], None] = lambda: None
) -> Subscription:
    """Feed every ``tranche.>`` message into ``board`` (calling ``changed`` after each), then
    read the bucket. Subscribing first means no update falls between the two; the board keeps
    the newer of two positions by ``sequence``."""

    async def on_message(msg) -> None:
        board.apply(msg.subject, msg.data)
        changed()

    subscription = await nc.subscribe(s.all_of(s.PREFIX), cb=on_message)
    await load_positions(nc, board)
    changed()
    return subscription
