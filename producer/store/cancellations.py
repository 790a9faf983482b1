"""Cancelled tasks in the store: the cancel itself, and the recent ones consumers ask for."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor.producer.store.rows import record_of
from conveyor.producer.store.schema import tasks
from conveyor.shared.records import TERMINAL_VALUES, TaskRecord, TaskStatus


class Cancellations:
    """Marks tasks cancelled; lists the ones cancelled lately."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def cancel(self, task_id: str, now: float) -> TaskRecord | None:
        """Mark a task cancelled unless it already finished; the record as it is now."""
        async with self._engine.begin() as connection:
            await connection.execute(
                update(tasks)
                .where(tasks.c.id == task_id, tasks.c.status.not_in(TERMINAL_VALUES))
                .values(
                    status=TaskStatus.CANCELLED.value,
                    finished_at=now,
                    next_attempt_at=None,
                    error={"type": "Cancelled", "message": "cancelled on request"},
                )
            )
            row = (await connection.execute(select(tasks).where(tasks.c.id == task_id))).first()
        return None if row is None else record_of(row)

    async def cancelled_since(self, since: float, limit: int = 10_000) -> list[str]:
        """Ids of tasks cancelled since `since` (a consumer starting up honours them)."""
        query = (
            select(tasks.c.id)
            .where(tasks.c.status == TaskStatus.CANCELLED.value, tasks.c.finished_at >= since)
            .order_by(tasks.c.finished_at.desc())
            .limit(limit)
        )
        async with self._engine.connect() as connection:
            return list((await connection.execute(query)).scalars())
