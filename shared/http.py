"""The HTTP side every service mounts: ``/health`` (alive), ``/ready`` (NATS connected, storage
reachable) and ``/metrics`` (Prometheus). Reading never changes anything (DESIGN.md, promise 8)."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, HTTPException, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Message, Receive, Scope, Send

MAX_BODY_BYTES = 256 * 1024
"""The largest request body any service reads: far above any real bot or command, far below
NATS's max payload (1 MB), which a bot record must fit in."""


class Problem(BaseModel):
    code: str
    """Stable, for machines (``BOT_NOT_FOUND``, ``POSITION_OPEN``, ``BODY_TOO_LARGE``)."""
    message: str
    """One sentence for people."""


class ErrorAnswer(BaseModel):
    """Every 4xx answer: ``detail`` is a sentence, a coded problem, or (422 from validation)
    FastAPI's list of the invalid fields."""

    detail: str | Problem | list[dict[str, Any]]


WHY = {
    400: "The body is not valid JSON",
    401: "No valid bearer token",
    403: "Writes over HTTP are switched off (no token configured)",
    404: "No such thing (bot, order, position, fill)",
    409: "Refused in the current state (exists, changed meanwhile, holds a position)",
    413: "The body is over the size this service reads",
    502: "The service this one reads through did not answer",
    422: "Invalid input: the fields at fault, or a coded reason",
}


def answers(*statuses: int, json: bool = False) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can answer these error statuses; ``json``: say the errors
    are JSON where the route's own answer is another type (a CSV), which FastAPI would otherwise
    declare for them too."""
    content: dict[str, Any] = {"content": {"application/json": {}}} if json else {}
    return {
        status: {"model": ErrorAnswer, "description": WHY[status]} | content for status in statuses
    }


def document_answers(app: FastAPI) -> None:
    """Make the app's OpenAPI say what it answers: every route with a body can answer 400 (not
    JSON) and 413 (:class:`BodyLimit`), and every 422 may carry a sentence or a coded problem as
    well as FastAPI's list; a method a path does not support is 405 with every method it does in
    ``Allow`` (Starlette names only the first route's)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        defined = ErrorAnswer.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(defined.pop("$defs", {}))
        components.setdefault("ErrorAnswer", defined)
        ref = {"$ref": "#/components/schemas/ErrorAnswer"}
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                declared = operation.setdefault("responses", {})
                statuses = ["422"] if "422" in declared else []
                if "requestBody" in operation:
                    statuses += ["400", "413", "422"]
                for status in statuses:
                    declared[status] = {
                        "description": WHY[int(status)],
                        "content": {"application/json": {"schema": ref}},
                    }
        app.openapi_schema = schema
        return schema

    # FastAPI's documented way to extend its schema
    app.openapi = openapi  # type: ignore[method-assign]

    async def method_not_allowed(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        if error.status_code != 405:
            return await http_exception_handler(request, error)
        allowed: set[str] = set()
        for route in app.router.routes:
            match, _ = route.matches({**request.scope, "method": "GET"})
            methods = getattr(route, "methods", None)
            if match != Match.NONE and methods:
                allowed |= set(methods)
        return JSONResponse(
            {"detail": "Method Not Allowed"},
            status_code=405,
            headers={"Allow": ", ".join(sorted(allowed))},
        )

    app.add_exception_handler(StarletteHTTPException, method_not_allowed)


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

    @router.get(
        "/metrics",
        summary="Prometheus metrics (text exposition format)",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
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


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 with a code and a
    sentence before the app sees it (never a 500 from a publish that is too large). The body is
    read here, at most ``max_bytes`` + one chunk of it, and handed on unchanged."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        too_large = declared.isdigit() and int(declared) > self.max_bytes
        chunks: list[bytes] = []
        size = 0
        while not too_large:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            too_large = size > self.max_bytes
            if not message.get("more_body"):
                break
        if too_large:
            answer = JSONResponse(
                {"detail": {"code": "BODY_TOO_LARGE", "message": f"the request body is over "
                            f"{self.max_bytes} bytes, the most this service reads"}},
                status_code=413,
            )  # fmt: skip
            await answer(scope, receive, send)
            return
        body = b"".join(chunks)
        await self.app(scope, _replay([{"type": "http.request", "body": body}], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``messages`` first, then the real channel: a streaming answer (server-sent events) keeps
    listening for the client's disconnect, which must come when it happens, not at once."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
