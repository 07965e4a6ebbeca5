"""The HTTP side every service mounts: ``/health`` (alive), ``/ready`` (NATS connected, storage
reachable) and ``/metrics`` (Prometheus). Reading never changes anything (DESIGN.md, promise 8)."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr

Check = Callable[[], Awaitable[str | None]]
"""A readiness check: returns when fine (optionally a note, e.g. ``degraded: 429``), raises with
a reason when not."""


def health_router(service: str, mode: str, checks: dict[str, Check]) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/health", summary="The process is alive")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": service, "mode": mode}

    @router.get("/ready", summary="NATS connected and storage reachable")
    async def ready() -> JSONResponse:
        results: dict[str, str] = {}
        failing = False
        for name, check in checks.items():
            try:
                note = await asyncio.wait_for(check(), timeout=2.0)
                results[name] = f"ok ({note})"[:300] if note else "ok"
            except Exception as error:  # report the failure, never crash the probe
                results[name] = f"failing: {type(error).__name__}: {error}"[:300]
                failing = True
        ok = not failing
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "service": service, "checks": results},
            status_code=200 if ok else 503,
        )

    @router.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def bearer_guard(token: SecretStr | None, variable: str, what: str) -> Callable[..., None]:
    """A FastAPI dependency that lets a request through only with ``Authorization: Bearer
    <token>``: 403 when no token is configured (``what`` is switched off), 401 without the right
    one. Compared in constant time; the token is never logged or echoed."""

    def require(authorization: Annotated[str | None, Header()] = None) -> None:
        expected = token.get_secret_value() if token else ""
        if not expected:
            raise HTTPException(403, f"{what} over HTTP is switched off: set {variable}")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(
                401,
                f"a valid bearer token is required ({variable})",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require
