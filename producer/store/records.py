"""Reading task records: one by id, a page of them, which have finished."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor.producer.store.rows import record_of
from conveyor.producer.store.schema import tasks
from conveyor.shared.errors import SubmissionError
from conveyor.shared.ids import is_task_id
from conveyor.shared.records import TERMINAL_VALUES, TaskPage, TaskRecord, TaskStatus


class Records:
    """Task records as the API, the waiters and the run checks read them."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, task_id: str) -> TaskRecord | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(select(tasks).where(tasks.c.id == task_id))).first()
        return None if row is None else record_of(row)

    async def list(
        self,
        *,
        status: TaskStatus | None = None,
        task: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        """Newest first; `cursor` is the id of the last item of the previous page.

        Raises:
            SubmissionError: `cursor` is not one this API gave out (field `cursor`).
        """
        if cursor is not None and not is_task_id(cursor):
            raise SubmissionError("cursor: not a cursor this API gave out", field="cursor")
        query = select(tasks).order_by(tasks.c.id.desc()).limit(limit + 1)
        if status is not None:
            query = query.where(tasks.c.status == status.value)
        if task is not None:
            query = query.where(tasks.c.task == task)
        if cursor is not None:
            query = query.where(tasks.c.id < cursor)
        async with self._engine.connect() as connection:
            rows = list(await connection.execute(query))
        items = [record_of(row) for row in rows[:limit]]
        more = len(rows) > limit
        return TaskPage(items=items, next_cursor=items[-1].id if more and items else None)

    async def terminal(self, ids: Iterable[str]) -> set[str]:
        """Which of `ids` have reached a terminal status."""
        query = select(tasks.c.id).where(
            tasks.c.id.in_(list(ids)), tasks.c.status.in_(TERMINAL_VALUES)
        )
        async with self._engine.connect() as connection:
            return set((await connection.execute(query)).scalars())
