"""Task status events: what consumers report about each attempt, on the events exchange.

Events travel in batches: one AMQP message holds a JSON array of the events a consumer had
ready to send (often one, many under load), so reporting costs little per task. Readers
(the producer's recorder, the demo, the benchmarks, tests) take the batch apart with
decode_events. An event's status is a TaskStatus (records.py), one of EVENT_STATUSES.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from conveyor.shared.errors import UndecodableMessage
from conveyor.shared.records import TaskStatus

# The statuses a consumer reports (`retrying`: this attempt failed, the next one is
# scheduled at `retry_at`); the store orders them by (run, status).
EVENT_STATUSES = frozenset(
    {TaskStatus.RUNNING, TaskStatus.RETRYING, TaskStatus.SUCCEEDED, TaskStatus.FAILED}
)


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One state change of one attempt of one task."""

    task_id: str
    task: str
    state: TaskStatus  # one of EVENT_STATUSES
    attempt: int
    worker: str
    at: float  # seconds since the epoch, from the consumer's clock
    redelivered: bool = False  # the broker redelivered this message (e.g. a consumer died)
    started_at: float | None = None  # when the handler started (on every event of a run)
    result: Any = None
    error: dict[str, str] | None = None  # type, message and a short traceback
    # Which start of the task this is (1 = first): redeliveries after a crash count, so the
    # store can order events of one attempt and count `attempts` as starts.
    run: int = 1
    retry_at: float | None = None  # for `retrying`: when the next attempt is due


def make_event(
    task_id: str,
    task: str,
    state: TaskStatus,
    attempt: int,
    worker: str,
    *,
    redelivered: bool = False,
    started_at: float | None = None,
    result: Any = None,
    error: dict[str, str] | None = None,
    run: int = 1,
    retry_at: float | None = None,
) -> TaskEvent:
    """An event stamped with the current time."""
    return TaskEvent(
        task_id,
        task,
        state,
        attempt,
        worker,
        time.time(),
        redelivered,
        started_at,
        result,
        error,
        run,
        retry_at,
    )


EVENTS_ROUTING_KEY = "task.events"


def encode_events(events: Sequence[TaskEvent]) -> bytes:
    """The body of an events message: a JSON array of `events`, in order."""
    return orjson.dumps(events)  # orjson serializes dataclasses natively, without a copy


def decode_events(body: bytes) -> list[TaskEvent]:
    """The events in `body` (a JSON array of events, or one event), or UndecodableMessage."""
    try:
        data = orjson.loads(body)
        items = data if isinstance(data, list) else [data]
        return [TaskEvent(**{**item, "state": _event_status(item["state"])}) for item in items]
    except (ValueError, TypeError, KeyError) as error:
        raise UndecodableMessage(f"not a task event: {error}") from None


def _event_status(value: str) -> TaskStatus:
    status = TaskStatus(value)
    if status not in EVENT_STATUSES:
        raise ValueError(f"{value!r} is no status a consumer reports")
    return status
