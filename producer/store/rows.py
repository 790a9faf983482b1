"""Rows of the tasks table as the rest of the producer sees them: records and messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row

from conveyor.shared.envelope import TaskMessage
from conveyor.shared.records import TaskError, TaskRecord, TaskStatus


def time_of(seconds: float | None) -> datetime | None:
    """An epoch-seconds column as an aware UTC datetime."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def record_of(row: Row[Any]) -> TaskRecord:
    """The API's record of a task row."""
    created_at = time_of(row.created_at)
    assert created_at is not None
    return TaskRecord(
        id=row.id,
        task=row.task,
        queue=row.queue,
        status=TaskStatus(row.status),
        payload=row.payload,
        result=row.result,
        error=TaskError.model_validate(row.error) if row.error else None,
        attempts=row.attempts,
        max_retries=row.max_retries,
        timeout_s=row.timeout_s,
        idempotency_key=row.idempotency_key,
        worker=row.worker,
        request_id=row.request_id,
        created_at=created_at,
        started_at=time_of(row.started_at),
        finished_at=time_of(row.finished_at),
        next_attempt_at=time_of(row.next_attempt_at),
        eta=time_of(row.due_at),
    )


def message_of(row: Row[Any]) -> TaskMessage:
    """The message of a recorded task, to publish it again (options as recorded)."""
    return TaskMessage(
        id=row.id,
        task=row.task,
        queue=row.queue,
        payload=row.payload,
        max_retries=row.max_retries,
        timeout_s=row.timeout_s,
        created_at=datetime.fromtimestamp(row.created_at, UTC),
        request_id=row.request_id,
    )
