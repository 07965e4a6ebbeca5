"""One runtime every service is wired on: storage, NATS, the outbox relay, the dead-letter path
and the HTTP app with health, readiness and metrics.

A service's ``app.py`` builds a :class:`Service`, hangs its subscribers on ``service.router`` and
calls :meth:`Service.run`. Handlers change state with :meth:`Service.transact`, which commits the
change and its outgoing messages together and then wakes the relay.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import uvicorn
from fastapi import APIRouter, FastAPI
from nats.aio.client import Client as NatsClient
from sqlmodel import Session, SQLModel

from shared import logging as tranche_logging
from shared.bus import DeadLetters, connect, make_broker, make_router, outbox_publisher
from shared.db import create_tables, make_engine, ping
from shared.http import health_router
from shared.outbox import OutboxMessage, OutboxRelay
from shared.settings import ServiceSettings
from shared.streams import ensure_streams

T = TypeVar("T")


class StartupError(Exception):
    """A clear, one-sentence reason the service cannot start."""


class Service:
    def __init__(self, settings: ServiceSettings, tables: list[type[SQLModel]]):
        self.settings = settings
        self.name = settings.service
        self.log = tranche_logging.get_logger(f"tranche.{self.name}")
        self.engine = make_engine(settings.db_url)
        self.tables = [OutboxMessage, *tables]
        self.dead_letters = DeadLetters(self.name)
        self.router = make_router(self.dead_letters)
        self.broker = make_broker(settings.nats_url)
        self.nc: NatsClient | None = None
        self.relay = OutboxRelay(self.engine, self._publish, fault=settings.fault)
        self._publisher: Callable[[OutboxMessage], Awaitable[None]] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.on_start: list[Callable[[], Awaitable[None]]] = []
        self.background: list[Callable[[], Awaitable[None]]] = []
        self.http_routers: list[APIRouter] = []
        self.started = False

    async def _publish(self, row: OutboxMessage) -> None:
        if self._publisher is None:
            raise RuntimeError("not connected to NATS yet")
        await self._publisher(row)

    # -- state changes -------------------------------------------------------------------------

    async def transact(self, change: Callable[[Session], T]) -> T:
        """Run ``change`` in one database transaction (state + staged messages), commit, and wake
        the outbox relay. ``change`` runs in a worker thread: it must not touch the event loop."""

        def run() -> T:
            with Session(self.engine, expire_on_commit=False) as session:
                result = change(session)
                session.commit()
                return result

        result = await asyncio.to_thread(run)
        self.relay.wake()
        return result

    async def read(self, query: Callable[[Session], T]) -> T:
        def run() -> T:
            with Session(self.engine) as session:
                return query(session)

        return await asyncio.to_thread(run)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(create_tables, self.engine, self.tables)
        timeout = self.settings.nats_connect_timeout_s
        try:
            self.nc = await asyncio.wait_for(
                connect(self.settings.nats_url, f"tranche-{self.name}"), timeout
            )
        except (TimeoutError, OSError, Exception) as error:
            raise StartupError(
                f"cannot reach NATS at {self.settings.nats_url} within {timeout:g} s "
                f"(TRANCHE_NATS_URL): {type(error).__name__} {error}".strip()
            ) from None
        await ensure_streams(self.nc.jetstream())
        self.dead_letters.nc = self.nc
        self._publisher = outbox_publisher(self.nc)
        for hook in self.on_start:
            await hook()
        self.broker.include_router(self.router)
        await asyncio.wait_for(self.broker.start(), timeout)
        self._tasks.append(asyncio.create_task(self.relay.run(self.settings.outbox_poll_s)))
        for job in self.background:
            self._tasks.append(asyncio.create_task(job()))
        self.started = True
        self.log.info("service.started", port=self.settings.port, mode=self.settings.mode)

    async def stop(self) -> None:
        self.log.info("service.stopping")
        await self.broker.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.nc is not None and self.nc.is_connected:
            try:
                await asyncio.wait_for(self.relay.flush(), 5)
            except Exception as error:
                self.log.warning("outbox.flush_on_stop_failed", error=str(error))
            await self.nc.drain()
        self.engine.dispose()
        self.log.info("service.stopped")

    # -- HTTP ------------------------------------------------------------------------------------

    async def _nats_ok(self) -> None:
        if self.nc is None or not self.nc.is_connected:
            raise ConnectionError("not connected to NATS")

    async def _storage_ok(self) -> None:
        await asyncio.to_thread(ping, self.engine)

    def http_app(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_: FastAPI):
            try:
                await self.start()
            except StartupError as error:
                print(f"{self.name}: {error}", file=sys.stderr)
                raise
            try:
                yield
            finally:
                await self.stop()

        app = FastAPI(
            title=f"Tranche {self.name}",
            lifespan=lifespan,
            description=f"The {self.name} service of Tranche. Every GET is read-only.",
        )
        app.include_router(
            health_router(
                self.name,
                self.settings.mode,
                {"nats": self._nats_ok, "storage": self._storage_ok},
            )
        )
        for router in self.http_routers:
            app.include_router(router)
        return app

    def run(self) -> None:
        """Run until SIGINT/SIGTERM; a busy port or a failed start is one sentence, exit code 2."""
        settings = self.settings
        check_port_free(settings.http_host, settings.port)
        config = uvicorn.Config(
            self.http_app(),
            host=settings.http_host,
            port=settings.port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        server = uvicorn.Server(config)
        server.run()
        if not server.started:
            raise SystemExit(2)


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                print(
                    f"port {port} on {host} is already in use: stop what uses it or set "
                    "TRANCHE_HTTP_PORT",
                    file=sys.stderr,
                )
                raise SystemExit(2) from None
            raise


def bootstrap(settings: ServiceSettings) -> None:
    """Logging first, so everything after it (including library logs) is structured."""
    tranche_logging.configure(settings.service, settings.log_level, settings.log_format)
