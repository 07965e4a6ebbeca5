"""Structured JSON logs: one event name and fields per line, bound to the correlation id.

Library logs (FastStream, uvicorn) go through the same renderer. Values of fields whose names
look like secrets are replaced before rendering, so an API key never reaches a log line.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

SECRET_FIELD = re.compile(r"(secret|password|token|api_key|private_key|authorization)", re.I)
REDACTED = "***"


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if SECRET_FIELD.search(key):
            event[key] = REDACTED
    return event


def configure(service: str, level: str = "info", fmt: str = "json") -> None:
    shared_processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            # First: a call below the level stops here, before the context is merged, the time
            # stamped and the fields redacted (the root logger would drop it only after that).
            structlog.stdlib.filter_by_level,
            *shared_processors,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared_processors,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)


@contextmanager
def correlated(correlation_id: str | None, **fields: Any) -> Iterator[None]:
    """Bind the correlation id (and any fields) to every log line inside the block."""
    with structlog.contextvars.bound_contextvars(correlation_id=correlation_id, **fields):
        yield
