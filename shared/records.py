"""Records as the HTTP API shows them (tasks, dead letters, workers): the public contract of
the API, the client and the CLI, so it lives where the client can import it without the service."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from conveyor.shared.workers import WorkerIdentity, WorkerState


class TaskStatus(StrEnum):
    """Where a task is; see the README's state machine."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """No event moves a task out of a terminal status."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})
# The same, as stored in the status column (for SQL conditions), in a stable order.
TERMINAL_VALUES = sorted(status.value for status in TERMINAL_STATUSES)


class TaskError(BaseModel):
    """Why an attempt failed: the exception's type and message, and a short traceback."""

    type: str
    message: str
    traceback: str | None = None


class TaskRecord(BaseModel):
    """Everything known about one task; timestamps are ISO 8601 UTC."""

    id: str
    task: str
    queue: str
    status: TaskStatus
    payload: dict[str, Any]
    result: Any = None
    error: TaskError | None = None
    attempts: int = Field(description="How many times a consumer started the task.")
    max_retries: int
    timeout_s: float
    idempotency_key: str | None = None
    worker: str | None = Field(default=None, description="Consumer of the latest attempt.")
    request_id: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = Field(
        default=None, description="For `retrying`: when the next attempt is due."
    )
    eta: datetime | None = Field(
        default=None, description="For a delayed task: when it is (or was) due."
    )


class TaskPage(BaseModel):
    """One page of a list: newest first; pass `next_cursor` back as `cursor` for the next."""

    items: list[TaskRecord]
    next_cursor: str | None = None


class RecordBatch(BaseModel):
    """The records of a batch submission, in the order submitted."""

    items: list[TaskRecord]


class DeadLetterView(BaseModel):
    """A dead letter as the API lists it."""

    task_id: str
    task: str | None
    queue: str | None
    reason: str
    error: str | None
    attempts: int
    dead_lettered_at: datetime


class DeadLetterPage(BaseModel):
    items: list[DeadLetterView]
    next_cursor: str | None = None


class WorkerView(WorkerIdentity):
    """A worker as `GET /workers` shows it."""

    state: WorkerState
    started_at: datetime
    last_heartbeat_at: datetime
    heartbeat_age_s: float
    running: list[str]
    # A lost worker's running tasks: the broker redelivers them once it closes its
    # connection (a dead TCP peer takes up to two AMQP heartbeats to notice).
    at_risk: list[str]
    processed: int
    failed: int


class WorkerPage(BaseModel):
    """Every worker at once: the page shape of every list, `next_cursor` always null."""

    items: list[WorkerView]
    next_cursor: None = None


class TaskTypeView(BaseModel):
    """A task type as `GET /task-types` shows it: options resolved, payload schema, and how
    many online workers serve it (0 during a rollout means nobody runs it yet)."""

    name: str
    queue: str
    max_retries: int
    timeout_s: float
    description: str
    payload_schema: dict[str, Any]
    workers: int


class TaskTypePage(BaseModel):
    items: list[TaskTypeView]
    next_cursor: str | None = None
