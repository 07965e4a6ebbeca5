"""An ASGI app behind a real HTTP server on a free loopback port, for code under test that
speaks HTTP to a service (the CLI, ``tranche status``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from tranche.stack import free_port


@asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """Serve ``app``; yields its base URL, stops the server on leaving."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None,
                       access_log=False)
    )  # fmt: skip
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
