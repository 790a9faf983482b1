"""Consumers' status events applied to task records, never moving a task backwards.

Events can arrive late, twice or out of order (several producer replicas apply them
concurrently), so every update is guarded by an ordering key in SQL:
`progress = run * 4 + rank(state)`, where `run` counts the starts of the task. An update
applies only if its key is higher and the task is not yet terminal.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import bindparam, func, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor.producer.store.schema import tasks
from conveyor.shared.events import TaskEvent
from conveyor.shared.records import TERMINAL_VALUES, TaskStatus

log = logging.getLogger(__name__)

# A run starts (running) and ends one way: retrying, succeeded or failed.
_RANK = {
    TaskStatus.RUNNING: 1,
    TaskStatus.RETRYING: 3,
    TaskStatus.SUCCEEDED: 3,
    TaskStatus.FAILED: 3,
}
APPLY_TRIES = 3


def progress_of(run: int, state: TaskStatus) -> int:
    """The ordering key of an event: later runs first, then the state within a run."""
    return run * 4 + _RANK[state]


class Events:
    """Applies status events to the records they name (the Recorder's writes)."""

    def __init__(self, engine: AsyncEngine, max_result_bytes: int) -> None:
        self._engine = engine
        self._max_result_bytes = max_result_bytes

    async def apply(self, events: Sequence[TaskEvent]) -> set[str]:
        """Apply status events in one transaction; returns the ids of terminal events.

        Rows are updated in (id, progress) order, so replicas applying overlapping batches
        lock rows in the same order and cannot deadlock; a lost race (serialization
        failure) is retried.
        """
        params = sorted(
            (self._params(e) for e in events), key=lambda p: (p["b_id"], p["b_progress"])
        )
        if not params:
            return set()
        statement = (
            update(tasks)
            .where(
                tasks.c.id == bindparam("b_id"),
                tasks.c.progress < bindparam("b_progress"),
                # Not NOT IN: executemany cannot expand a list parameter.
                *(tasks.c.status != status for status in TERMINAL_VALUES),
            )
            .values(
                status=bindparam("b_status"),
                progress=bindparam("b_progress"),
                attempts=func.greatest(tasks.c.attempts, bindparam("b_run"))
                if self._engine.dialect.name == "postgresql"
                else func.max(tasks.c.attempts, bindparam("b_run")),
                worker=bindparam("b_worker"),
                started_at=bindparam("b_started_at"),
                finished_at=bindparam("b_finished_at"),
                result=bindparam("b_result", type_=tasks.c.result.type),
                error=bindparam("b_error", type_=tasks.c.error.type),
                next_attempt_at=bindparam("b_next_attempt_at"),
            )
        )
        for attempt in range(1, APPLY_TRIES + 1):
            try:
                async with self._engine.begin() as connection:
                    await connection.execute(statement, params)
                break
            except DBAPIError as error:
                if attempt == APPLY_TRIES or error.connection_invalidated:
                    raise
                log.info("applying %d events lost a race (%s); retrying", len(params), error)
        return {e.task_id for e in events if e.state.terminal}

    def _params(self, event: TaskEvent) -> dict[str, Any]:
        state, result, error = event.state, event.result, event.error
        if state is TaskStatus.SUCCEEDED:
            size = len(orjson.dumps(result))
            if size > self._max_result_bytes:
                state, result = TaskStatus.FAILED, None
                error = _result_too_large(size, self._max_result_bytes)
        return {
            "b_id": event.task_id,
            "b_progress": progress_of(event.run, state),
            "b_status": state.value,
            "b_run": event.run,
            "b_worker": event.worker,
            "b_started_at": event.started_at or event.at,
            "b_finished_at": event.at if state.terminal else None,
            "b_result": result if state is TaskStatus.SUCCEEDED else None,
            "b_error": error if state in (TaskStatus.FAILED, TaskStatus.RETRYING) else None,
            "b_next_attempt_at": event.retry_at if state is TaskStatus.RETRYING else None,
        }


def _result_too_large(size: int, limit: int) -> dict[str, str]:
    return {
        "type": "ResultTooLarge",
        "message": f"the result is {size} bytes as JSON, over CONVEYOR_MAX_RESULT_BYTES={limit}",
    }
