"""Connections to a NATS server with the deployment's users (deploy/nats/permissions.conf),
remembering the permission errors the server sends back."""

from __future__ import annotations

from typing import Any

import nats
from nats.aio.client import Client

from tests.support.nats_server import NatsServer


class As:
    """A connection as one user, remembering the errors the server sent it."""

    def __init__(self, server: NatsServer, passwords: dict[str, str]):
        self.server, self.passwords = server, passwords
        self.errors: list[str] = []

    async def connect(self, user: str, **options: Any) -> Client:
        async def on_error(error: Exception) -> None:
            self.errors.append(str(error))

        return await nats.connect(
            self.server.url,
            user=user,
            password=self.passwords[user],
            max_reconnect_attempts=0,
            **({"error_cb": on_error} | options),
        )


async def stored(nc: Client, stream: str) -> int:
    return (await nc.jetstream().stream_info(stream)).state.messages


def denied(users: As) -> bool:
    return any("permissions violation" in e.lower() for e in users.errors)
