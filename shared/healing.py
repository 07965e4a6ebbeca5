"""Keeping a running service's JetStream setup in place: after a reconnect (a restarted server, a
lost connection, a new stream leader) or a server whose store was wiped, the streams and this
service's durable consumers are checked and whatever is missing is made again, so consuming goes
on without restarting the service.

FastStream binds its pull subscriptions once, at start; a fetch names the consumer
(``$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>``), so a consumer made again under the same name
with the same config is fetched from again by the subscription already running. A consumer made
again starts from the stream's history (or from new messages, ``new_only``): every handler is
idempotent, so what was already handled is handled again as a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared.logging import get_logger
from shared.streams import Consumer, StreamsMissing

log = get_logger(__name__)

CHECK_EVERY_S = 10.0
"""Between reconnects, how often the consumers are looked at anyway (a server can lose them
while a client stays connected: a node of a cluster rejoining with its storage wiped)."""
RETRY_S = 1.0


async def missing_consumers(js: JetStreamContext, consumers: Sequence[Consumer]) -> list[Consumer]:
    """The consumers the server does not have (their stream missing counts as missing)."""
    missing = []
    for consumer in consumers:
        try:
            await js.consumer_info(consumer.stream.name, consumer.durable)
        except NotFoundError:
            missing.append(consumer)
    return missing


async def restore(
    js: JetStreamContext,
    consumers: Sequence[Consumer],
    setup_streams: Callable[[JetStreamContext], Awaitable[None]],
    streams_too: bool,
) -> list[str]:
    """Make again what is missing; the names of the consumers made. ``setup_streams`` creates or
    only checks the streams (``TRANCHE_STREAM_SETUP``); it runs when ``streams_too`` (after a
    reconnect) or when a consumer is missing, before the consumers are made."""
    missing = await missing_consumers(js, consumers)
    if not missing and not streams_too:
        return []
    await setup_streams(js)
    for consumer in missing:
        await js.add_consumer(consumer.stream.name, consumer.config())
    return [consumer.durable for consumer in missing]


class Healer:
    """Runs :func:`restore` after every reconnect and every :data:`CHECK_EVERY_S`, until
    cancelled; a failed pass (a server still electing leaders, streams not yet provisioned by
    the admin) is tried again after :data:`RETRY_S`."""

    def __init__(
        self,
        js: Callable[[], JetStreamContext],
        consumers: Sequence[Consumer],
        setup_streams: Callable[[JetStreamContext], Awaitable[None]],
        check_every_s: float = CHECK_EVERY_S,
    ):
        self._js = js
        self.consumers = consumers
        self._setup_streams = setup_streams
        self.check_every_s = check_every_s
        self._reconnected = asyncio.Event()
        self.healthy = True
        """False from a failed pass until a pass succeeds: JetStream is not as this service
        needs it (readiness says so)."""

    async def on_reconnect(self) -> None:
        """The NATS client's ``reconnected_cb``."""
        self._reconnected.set()

    async def run(self) -> None:
        everything = False  # after a reconnect or a failed pass: streams too, and soon
        while True:
            if not everything:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._reconnected.wait(), self.check_every_s)
            if self._reconnected.is_set():
                self._reconnected.clear()
                everything = True
            try:
                made = await restore(self._js(), self.consumers, self._setup_streams, everything)
            except asyncio.CancelledError:
                raise
            except StreamsMissing as error:
                self._failed("jetstream.streams_missing", str(error))
            except Exception as error:  # a timeout, no leader yet, a lost connection: again
                self._failed("jetstream.heal_failed", f"{type(error).__name__}: {error}")
            else:
                if made:
                    log.warning("jetstream.consumers_recreated", consumers=made)
                if not self.healthy:
                    log.info("jetstream.healed")
                self.healthy, everything = True, False
                continue
            everything = True
            await asyncio.sleep(RETRY_S)

    def _failed(self, event: str, error: str) -> None:
        if self.healthy:
            log.warning(event, error=error)
        self.healthy = False

    async def ok(self) -> None:
        """A readiness check: raises while a pass has failed and none succeeded since."""
        if not self.healthy:
            raise ConnectionError(
                "JetStream did not confirm this service's streams and consumers (missing, or "
                "no leader or quorum); checking again every second"
            )
