"""The board's inputs: a core-NATS subscription to ``tranche.>``, and a first read of what was
there before the view started: positions (the ``tranche_positions`` bucket, or the ledger's
``GET /positions`` for users the bucket is closed to) and safety's trading states
(``GET /states``). Shared by the web dashboard and the terminal view. Each bot's stop on the
exchange is read every few seconds from the signal service's and the executor's ``GET /stops``
(:func:`read_exchange_stops`): no message carries why a position has none.

Reading never changes anything (DESIGN.md, promise 8): a core subscription sees every publish
(JetStream ones included) without creating a stream consumer, and the bucket is only read.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, get_args

import httpx
import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Counter

from services.dashboard.board import Board, StateReason
from shared import subjects as s
from shared.contracts import Mode, PositionUpdate
from shared.logging import get_logger
from shared.signing import Verifier
from shared.stops import Answer, read_stops

log = get_logger("tranche.dashboard")
NOT_SHOWN = Counter(
    "tranche_dashboard_messages_not_shown_total",
    "Order events without the executor's signature, left off the board",
)
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A bot id as a scope of safety's ``/states`` (``*`` is the whole system)."""


async def load_positions(nc: NatsClient, board: Board) -> None:
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


async def read_positions(client: httpx.AsyncClient, ledger_url: str, board: Board) -> None:
    """Every position the ledger holds, in every mode, from its ``GET /positions`` (what a user
    without rights on the bucket may read). Raises ``httpx.HTTPError`` or ``ValueError`` when
    the ledger cannot be read."""
    for mode in get_args(Mode):
        response = await client.get(f"{ledger_url}/positions", params={"mode": mode}, timeout=3)
        response.raise_for_status()
        for row in response.json():
            board.know_position(PositionUpdate.model_validate(row["position"]))


async def read_states(
    client: httpx.AsyncClient, safety_url: str, board: Board, newest: bool = False
) -> None:
    """Safety's trading states (the whole system's and each bot's) from its ``GET /states``,
    so a halt from before the view started shows (``newest``: after a reconnect, the states
    read win over those held). Raises ``httpx.HTTPError``, ``ValueError``, ``KeyError`` or
    ``TypeError`` when safety cannot be read."""
    response = await client.get(safety_url + "/states", timeout=3)
    response.raise_for_status()
    rows = response.json()["states"]
    if not any(row["scope"] == "*" for row in rows):
        # Safety stores the system's state only once someone changed it: no row is active.
        board.know_state(None, "active", StateReason("", "", ""), newest)
    for row in rows:
        if row["scope"] == "*" or TOKEN.fullmatch(row["scope"]):
            board.know_state(
                None if row["scope"] == "*" else row["scope"],
                row["state"],
                StateReason(row["code"], row["message"], row["caused_by"]),
                newest,
            )


async def _answer(client: httpx.AsyncClient, url: str) -> Answer:
    try:
        response = await client.get(url, timeout=3)
    except httpx.HTTPError as error:
        return None, f"unreachable: {type(error).__name__}"
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:200]
    return response.status_code, body


async def read_exchange_stops(
    client: httpx.AsyncClient, signal_url: str, executor_url: str, board: Board
) -> bool:
    """Each bot's stop on the exchange, or why it has none (shared/stops.py joins the signal
    service's ``GET /stops`` with the executor's); whether the board changed."""
    asked = await _answer(client, signal_url + "/stops")
    held = await _answer(client, executor_url + "/stops")
    try:
        states, unread = read_stops(asked, held, board.holdings())
    except ValueError as error:  # a body that is not the stops (pydantic's ValidationError)
        return board.know_stops({}, [f"an answer that is not the stops: {error}"[:300]])
    return board.know_stops(states, unread)


def signed_order_events(verifier: Verifier) -> Callable[[Msg], bool]:
    """Which messages the board may show: an order event only with the executor's signature
    (shared/signing.py), so a fill on the page is one the ledger books; everything else as is."""
    prefix = s.ORDERS_EVENTS + "."

    def shown(msg: Msg) -> bool:
        return not msg.subject.startswith(prefix) or verifier.valid(
            msg.subject, msg.data, msg.headers
        )

    return shown


async def follow(
    nc: NatsClient,
    board: Board,
    changed: Callable[[], None] = lambda: None,
    first_read: Callable[[NatsClient, Board], Awaitable[None]] = load_positions,
    shown: Callable[[Msg], bool] = lambda msg: True,
) -> Subscription:
    """Feed every ``tranche.>`` message that is ``shown`` into ``board`` (calling ``changed``
    after each), then read what was there before (``first_read``: the bucket by default).
    Subscribing first means no update falls between the two; the board keeps the newer of two
    positions by ``sequence``. A message not shown is counted and logged, never displayed."""

    async def on_message(msg: Msg) -> None:
        if not shown(msg):
            NOT_SHOWN.inc()
            log.warning("message.not_shown", subject=msg.subject, reason="ORDER_EVENT_NOT_SIGNED")
            return
        board.apply(msg.subject, msg.data)
        changed()

    subscription: Subscription = await nc.subscribe(s.all_of(s.PREFIX), cb=on_message)
    await first_read(nc, board)
    changed()
    return subscription
