"""The dashboard after its NATS connection was cut for a few seconds (a network cut, the NATS
node it was connected to restarting) while the ledger went on booking: once connected again, the
page shows the ledger's position, not the one from before the cut. It follows plain subjects, so
what was published during the cut is never delivered again; it read the bucket only at start, and
the card showed a position closed since as current until the bot changed again."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import httpx
import nats
import pytest

from shared.streams import ensure_positions_bucket, ensure_streams
from tests.integration import test_dashboard
from tests.integration.test_dashboard import open_stream, position
from tests.support.nats_server import NatsServer
from tranche.stack import free_port


class CuttableProxy:
    """A TCP forwarder in front of NATS that can cut every connection and refuse new ones."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.open = True
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def cut(self) -> None:
        self.open = False
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.open = True

    def __enter__(self) -> CuttableProxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.cut()
        self._listener.close()


start_dashboard = test_dashboard.start_dashboard
"""Starts the dashboard process (the fixture of test_dashboard), here through the proxy."""
safety = test_dashboard.safety
"""The stand-in safety the dashboard reads states from (the fixture of test_dashboard)."""


@pytest.fixture
def proxy(nats_server: NatsServer) -> Iterator[CuttableProxy]:
    with CuttableProxy(nats_server.port) as found:
        yield found


@pytest.fixture
def nats_url(proxy: CuttableProxy) -> str:
    """The dashboard (start_dashboard) connects through the proxy."""
    return proxy.url


def ready(url: str) -> bool:
    try:
        return httpx.get(url + "/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def wait_for(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def test_after_a_nats_cut_the_page_shows_the_ledgers_position(
    nats_server: NatsServer, proxy: CuttableProxy, start_dashboard: Callable[[], str]
) -> None:
    ledger = await nats.connect(nats_server.url)  # the ledger: straight to the server
    try:
        js = ledger.jetstream()
        await ensure_streams(js)
        bucket = await ensure_positions_bucket(js)
        url = await asyncio.to_thread(start_dashboard)
        async with open_stream(url) as stream:
            # The ledger's book: an open position (sequence 1), in the bucket and on the subject.
            opened = position(sequence=1).model_dump_json().encode()
            await bucket.put("dash-1", opened)
            await js.publish("tranche.ledger.positions.dash-1", opened)
            await stream.until("bots", 'data-status="open"')

            proxy.cut()
            await wait_for(lambda: not ready(url), 15)  # the dashboard knows it is cut off

            # Meanwhile the exit fills and the ledger books it: flat (sequence 2).
            closed = (
                position(sequence=2)
                .model_copy(
                    update={
                        "message_id": "position-2",
                        "status": "flat",
                        "quantity": Decimal(0),
                        "position_id": None,
                        "average_entry_price": None,
                        "break_even_price": None,
                        "cost_basis": Decimal(0),
                        "tranches": [],
                    }
                )
                .model_dump_json()
                .encode()
            )
            await bucket.put("dash-1", closed)
            await js.publish("tranche.ledger.positions.dash-1", closed)

            proxy.restore()
            await wait_for(lambda: ready(url), 20)  # connected again
            stored = (await bucket.get("dash-1")).value
            assert b'"status":"flat"' in stored  # the ledger's truth, in the bucket
            await stream.until("bots", 'data-status="flat"', timeout=20)
    finally:
        await ledger.close()
