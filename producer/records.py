"""Task records as the HTTP API shows them: the public contract of the API, client and CLI."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


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
