"""Delayed tasks in the store: recorded `scheduled` with a `due_at`, claimed once due."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor.producer.store.rows import message_of
from conveyor.producer.store.schema import tasks
from conveyor.shared.envelope import TaskMessage
from conveyor.shared.records import TaskStatus


class Delays:
    """The queries of the due-task publisher (producer/scheduling/delays.py)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def claim_due(self, now: float, limit: int = 500) -> list[TaskMessage]:
        """Move delayed tasks that are due from `scheduled` to `queued` (unpublished, so the
        outbox covers a crash before their publish); the messages to publish. Replicas
        claiming at once get disjoint sets: the update only takes rows still `scheduled`."""
        due = (
            select(tasks.c.id)
            .where(tasks.c.status == TaskStatus.SCHEDULED.value, tasks.c.due_at <= now)
            .order_by(tasks.c.due_at)
            .limit(limit)
        )
        async with self._engine.begin() as connection:
            ids = list((await connection.execute(due)).scalars())
            if not ids:
                return []
            claimed = await connection.execute(
                update(tasks)
                .where(tasks.c.id.in_(ids), tasks.c.status == TaskStatus.SCHEDULED.value)
                # due_at becomes the claim time: the outbox sweeper counts from it.
                .values(status=TaskStatus.QUEUED.value, due_at=now)
                .returning(*tasks.c)
            )
            return [message_of(row) for row in claimed]

    async def next_due(self) -> float | None:
        """When the earliest delayed task is due."""
        query = select(func.min(tasks.c.due_at)).where(tasks.c.status == TaskStatus.SCHEDULED.value)
        async with self._engine.connect() as connection:
            due = (await connection.execute(query)).scalar()
        return None if due is None else float(due)
