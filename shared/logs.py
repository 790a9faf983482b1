"""Logging set-up: JSON lines or readable console lines, with task context on every line."""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson

# Fields (task_id, task, attempt, worker, request_id) attached to every line logged in a context.
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "conveyor_log_context", default=None
)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach `fields` to every log line written inside the block (and tasks it starts)."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.conveyor = _context.get() or {}
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message and the context fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "conveyor", {}),
        }
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    """`time level logger message key=value...`, for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s%(context)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "conveyor", {})
        record.context = "".join(f" {key}={value}" for key, value in fields.items())
        return super().format(record)


def configure_logging(level: str, fmt: str) -> None:
    """Send all logs to stderr in `fmt` ("json" or "console") at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(_ContextFilter())
    # Neither format shows threads, processes or source lines: skip gathering them for every
    # record (the logging docs' own optimisations): a per-task line costs a third less.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aio-pika/aiormq are chatty at INFO about every reconnect step.
    for noisy in ("aio_pika", "aiormq"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))
