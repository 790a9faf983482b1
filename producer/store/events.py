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

import asyncpg
import orjson
from sqlalchemy import bindparam, func, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor.producer.store.direct import DirectConnection
from conveyor.producer.store.schema import json_dumps, tasks
from conveyor.shared.errors import StoreUnavailable
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
        # PostgreSQL: the updates skip SQLAlchemy (see direct.py); one executemany is atomic.
        postgres = engine.dialect.name == "postgresql"
        self._direct = DirectConnection(engine) if postgres else None

    async def close(self) -> None:
        if self._direct is not None:
            await self._direct.close()

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
        if self._direct is not None:
            await self._apply_direct(self._direct, params)
        else:
            await self._apply_with_engine(params)
        return {e.task_id for e in events if e.state.terminal}

    async def _apply_direct(self, direct: DirectConnection, params: list[dict[str, Any]]) -> None:
        rows = [
            (
                *(p[name] for name in _DIRECT_PARAMS),
                json_dumps(p["b_result"]),  # as the engine writes None: JSON null
                json_dumps(p["b_error"]),
                TERMINAL_VALUES,
            )
            for p in params
        ]
        for attempt in range(1, APPLY_TRIES + 1):
            try:
                await direct.executemany(_APPLY, rows)
                return
            except asyncpg.TransactionRollbackError as error:
                if attempt == APPLY_TRIES:
                    raise StoreUnavailable(f"applying events lost races: {error!r}") from None
                log.info("applying %d events lost a race (%s); retrying", len(params), error)

    async def _apply_with_engine(self, params: list[dict[str, Any]]) -> None:
        """SQLite's way: the same update through SQLAlchemy, in one transaction."""
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
                attempts=func.max(tasks.c.attempts, bindparam("b_run")),  # SQLite's greatest
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


# The engine's statement, in PostgreSQL's own words (for DirectConnection).
_DIRECT_PARAMS = (
    "b_id",
    "b_progress",
    "b_status",
    "b_run",
    "b_worker",
    "b_started_at",
    "b_finished_at",
    "b_next_attempt_at",
)
_APPLY = f"""
    UPDATE {tasks.name} SET
        status = $3, progress = $2, attempts = greatest(attempts, $4), worker = $5,
        started_at = $6, finished_at = $7, next_attempt_at = $8,
        result = $9::jsonb, error = $10::jsonb
    WHERE id = $1 AND progress < $2 AND status <> ALL($11::text[])
"""


def _result_too_large(size: int, limit: int) -> dict[str, str]:
    return {
        "type": "ResultTooLarge",
        "message": f"the result is {size} bytes as JSON, over CONVEYOR_MAX_RESULT_BYTES={limit}",
    }
