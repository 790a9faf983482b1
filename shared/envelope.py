"""The task message: encode(task) -> AMQP message, decode(message) -> task.

Envelope v1: AMQP `message_id` = task id, `content_type` application/json, persistent,
`timestamp`; headers (named in wire.py, with the rest of the wire contract) carry the task
name, attempt, schema version and run options; the body is the payload as JSON (orjson).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, overload

import orjson
from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractMessage
from pamqp.commands import Basic

from conveyor.shared.errors import UndecodableMessage
from conveyor.shared.wire import (
    HEADER_ATTEMPT,
    HEADER_MAX_RETRIES,
    HEADER_QUEUED_AT,
    HEADER_REQUEST_ID,
    HEADER_RESENT,
    HEADER_RETRY_BASE,
    HEADER_RUNS,
    HEADER_TASK,
    HEADER_TIMEOUT_S,
    HEADER_VERSION,
)

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class TaskMessage:
    """One task as it travels from producer to consumer."""

    id: str
    task: str
    queue: str
    payload: dict[str, Any]
    attempt: int = 1
    # Resolved by the producer (the submission's, else the task's, else the defaults) and
    # carried by every message it sends; None only in messages published by other code.
    max_retries: int | None = None
    timeout_s: float | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    request_id: str | None = None
    # Published again by the outbox sweeper: it may have run already, so check first.
    resent: bool = False
    # Starts of this task before this message (earlier attempts, crashes included): a run's
    # number is runs_before + this message's delivery count, so `attempts` counts them all.
    runs_before: int = 0
    # Attempts before the last requeue from the dead letters: a requeue grants a fresh
    # retry budget, the attempt number goes on.
    retry_base: int = 0
    # When the message enters its work queue (epoch seconds): set when it is published, or
    # later for a retry that waits out its delay first. Consumers measure queue waits by it.
    queued_at: float | None = None

    @property
    def retries_used(self) -> int:
        return self.attempt - 1 - self.retry_base

    def resend(self) -> TaskMessage:
        """This task, flagged for publishing a second time."""
        return replace(self, resent=True)


def dumps(value: Any) -> bytes:
    """JSON bytes of `value` (orjson: fast, UTF-8, datetimes as ISO 8601)."""
    return orjson.dumps(value)


def loads(data: bytes | str) -> Any:
    """Parse JSON bytes; raises orjson.JSONDecodeError (a ValueError) on bad input."""
    return orjson.loads(data)


def encode(task: TaskMessage) -> Message:
    """The persistent AMQP message that carries `task`."""
    return Message(
        body=orjson.dumps(task.payload),
        content_type=CONTENT_TYPE,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=task.id,
        timestamp=task.created_at,
        headers=_headers(task),
    )


def encode_frame(task: TaskMessage) -> tuple[bytes, Basic.Properties]:
    """encode(task) as the body and properties aiormq publishes: the same bytes on the wire,
    without building the aio-pika Message in between (the Publisher's path: one per task)."""
    properties = Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=DeliveryMode.PERSISTENT.value,
        priority=0,  # as aio-pika's Message sets it
        message_id=task.id,
        timestamp=task.created_at,
        headers=_headers(task),
    )
    return orjson.dumps(task.payload), properties


def _headers(task: TaskMessage) -> dict[str, Any]:
    headers: dict[str, Any] = {
        HEADER_TASK: task.task,
        HEADER_ATTEMPT: task.attempt,
        HEADER_VERSION: SCHEMA_VERSION,
    }
    if task.max_retries is not None:
        headers[HEADER_MAX_RETRIES] = task.max_retries
    if task.timeout_s is not None:
        headers[HEADER_TIMEOUT_S] = task.timeout_s
    if task.request_id:
        headers[HEADER_REQUEST_ID] = task.request_id
    if task.resent:
        headers[HEADER_RESENT] = True
    if task.runs_before:
        headers[HEADER_RUNS] = task.runs_before
    if task.retry_base:
        headers[HEADER_RETRY_BASE] = task.retry_base
    # Now, unless the task enters its queue later (a retry's delay); never a copied past time.
    headers[HEADER_QUEUED_AT] = max(time.time(), task.queued_at or 0.0)
    return headers


def decode(message: AbstractMessage, queue: str) -> TaskMessage:
    """The task carried by `message`, or UndecodableMessage saying what is wrong with it."""
    headers = message.headers or {}
    version = _int_header(headers, HEADER_VERSION, SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise UndecodableMessage(f"unsupported envelope version {version}")
    if not message.message_id:
        raise UndecodableMessage("message has no message_id (the task id)")
    task = headers.get(HEADER_TASK)
    if isinstance(task, bytes):
        task = task.decode("utf-8", "replace")
    if not isinstance(task, str) or not task:
        raise UndecodableMessage(f"message has no {HEADER_TASK} header (the task name)")
    if message.content_type not in (None, "", CONTENT_TYPE):
        raise UndecodableMessage(f"content_type {message.content_type!r} is not {CONTENT_TYPE}")
    try:
        payload = orjson.loads(message.body)
    except orjson.JSONDecodeError as error:
        raise UndecodableMessage(f"body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise UndecodableMessage(f"body is JSON {type(payload).__name__}, not an object")
    attempt = _int_header(headers, HEADER_ATTEMPT, 1)
    if attempt < 1:
        raise UndecodableMessage(f"{HEADER_ATTEMPT} must be >= 1, got {attempt}")
    timestamp = message.timestamp
    request_id = headers.get(HEADER_REQUEST_ID)
    return TaskMessage(
        id=message.message_id,
        task=task,
        queue=queue,
        payload=payload,
        attempt=attempt,
        max_retries=_int_header(headers, HEADER_MAX_RETRIES, None),
        timeout_s=_float_header(headers, HEADER_TIMEOUT_S, None),
        created_at=timestamp.replace(tzinfo=UTC) if timestamp else datetime.now(UTC),
        request_id=request_id if isinstance(request_id, str) else None,
        resent=headers.get(HEADER_RESENT) is True,
        runs_before=_int_header(headers, HEADER_RUNS, 0),
        retry_base=_int_header(headers, HEADER_RETRY_BASE, 0),
        queued_at=_float_header(headers, HEADER_QUEUED_AT, None),
    )


@overload
def _int_header(headers: Any, name: str, default: int) -> int: ...
@overload
def _int_header(headers: Any, name: str, default: None) -> int | None: ...
def _int_header(headers: Any, name: str, default: int | None) -> int | None:
    if name not in headers:
        return default
    value = headers[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise UndecodableMessage(f"header {name} must be an integer, got {value!r}")
    return value


def _float_header(headers: Any, name: str, default: None) -> float | None:
    if name not in headers:
        return default
    value = headers[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UndecodableMessage(f"header {name} must be a number, got {value!r}")
    return float(value)
