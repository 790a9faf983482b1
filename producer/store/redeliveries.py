"""How often each task was redelivered: the run checks' count for queues that keep none.

Classic queues count no deliveries; a task redelivered more than CONVEYOR_MAX_DELIVERIES
times is dead-lettered on this count instead (producer/runs/checks.py).
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor.producer.store.schema import tasks


class Redeliveries:
    """Counts redeliveries in the task's record."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def increment(self, task_id: str) -> int:
        """Count one more redelivery of `task_id`; how many so far (0: no such record)."""
        statement = (
            update(tasks)
            .where(tasks.c.id == task_id)
            .values(deliveries=tasks.c.deliveries + 1)
            .returning(tasks.c.deliveries)
        )
        async with self._engine.begin() as connection:
            return int((await connection.execute(statement)).scalar() or 0)
