"""Task status events: what consumers report about each attempt, on the events exchange."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
from aio_pika import DeliveryMode, Message

from shared.errors import UndecodableMessage


class TaskState(StrEnum):
    """States a consumer reports; the store (later) orders them by (attempt, state)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One state change of one attempt of one task."""

    task_id: str
    task: str
    state: TaskState
    attempt: int
    worker: str
    at: float  # seconds since the epoch, from the consumer's clock
    redelivered: bool = False  # the broker redelivered this message (e.g. a consumer died)
    started_at: float | None = None  # when the handler started (on every event of a run)
    result: Any = None
    error: dict[str, str] | None = None

    @property
    def routing_key(self) -> str:
        return f"task.{self.state.value}"


def make_event(
    task_id: str,
    task: str,
    state: TaskState,
    attempt: int,
    worker: str,
    *,
    redelivered: bool = False,
    started_at: float | None = None,
    result: Any = None,
    error: dict[str, str] | None = None,
) -> TaskEvent:
    """An event stamped with the current time."""
    return TaskEvent(
        task_id, task, state, attempt, worker, time.time(), redelivered, started_at, result, error
    )


def encode_event(event: TaskEvent) -> Message:
    """The persistent AMQP message carrying `event`."""
    return Message(
        body=orjson.dumps(event),  # orjson serializes dataclasses natively, without a copy
        content_type="application/json",
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=f"{event.task_id}:{event.attempt}:{event.state.value}",
    )


def decode_event(body: bytes) -> TaskEvent:
    """The event in `body`, or UndecodableMessage."""
    try:
        data = orjson.loads(body)
        data["state"] = TaskState(data["state"])
        return TaskEvent(**data)
    except (ValueError, TypeError, KeyError) as error:
        raise UndecodableMessage(f"not a task event: {error}") from None
