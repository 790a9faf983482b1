"""Dead letters in the database: what landed in `{ns}.dead`, why, and the message to requeue.

RabbitMQ cannot list a queue or take one message out of its middle; a table can. The
producer drains `{ns}.dead` into this table (producer/dead_letters/keeper.py), and the API lists,
requeues and purges from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor.producer.store.schema import dead_letters, tasks
from conveyor.shared.errors import SubmissionError
from conveyor.shared.records import TERMINAL_VALUES, DeadLetterPage, DeadLetterView, TaskStatus
from conveyor.shared.wire import DeadLetterReason


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead letter with the message it holds."""

    task_id: str
    task: str | None
    queue: str | None
    reason: str
    error: str | None
    attempts: int
    dead_lettered_at: float
    body: bytes
    headers: dict[str, Any]
    content_type: str | None

    def view(self) -> DeadLetterView:
        return DeadLetterView(
            task_id=self.task_id,
            task=self.task,
            queue=self.queue,
            reason=self.reason,
            error=self.error,
            attempts=self.attempts,
            dead_lettered_at=datetime.fromtimestamp(self.dead_lettered_at, UTC),
        )


class DeadLetterStore:
    """The conveyor_dead_letters table, and the task records it touches."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def keep(self, letter: DeadLetter) -> None:
        """Record `letter` (replacing an earlier one of the same task). A task that failed
        in its handler has its own `failed` event on the way; any other dead letter (a crash
        loop the broker ended, a message the consumer refused) fails the record here."""
        row = {name: getattr(letter, name) for name in dead_letters.c.keys()}
        insert = pg_insert if self._engine.dialect.name == "postgresql" else sqlite_insert
        statement = insert(dead_letters).values(row)
        statement = statement.on_conflict_do_update(
            index_elements=[dead_letters.c.task_id],
            set_={name: statement.excluded[name] for name in row if name != "task_id"},
        )
        error = {"type": "DeadLettered", "message": f"{letter.reason}: {letter.error or ''}"}
        async with self._engine.begin() as connection:
            await connection.execute(statement)
            if letter.reason == DeadLetterReason.FAILED:
                return
            await connection.execute(
                update(tasks)
                .where(tasks.c.id == letter.task_id, tasks.c.status.not_in(TERMINAL_VALUES))
                .values(
                    status=TaskStatus.FAILED.value,
                    attempts=letter.attempts,
                    error=error,
                    finished_at=letter.dead_lettered_at,
                    next_attempt_at=None,
                )
            )

    async def get(self, task_id: str) -> DeadLetter | None:
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(
                    select(dead_letters).where(dead_letters.c.task_id == task_id)
                )
            ).first()
        return None if row is None else DeadLetter(**row._asdict())

    async def page(self, limit: int = 50, cursor: str | None = None) -> DeadLetterPage:
        """Newest first; `cursor` is `next_cursor` of the previous page."""
        query = (
            select(dead_letters)
            .order_by(dead_letters.c.dead_lettered_at.desc(), dead_letters.c.task_id.desc())
            .limit(limit + 1)
        )
        if cursor:
            at, task_id = _parse_cursor(cursor)
            position = tuple_(dead_letters.c.dead_lettered_at, dead_letters.c.task_id)
            query = query.where(position < tuple_(float(at), task_id))
        async with self._engine.connect() as connection:
            rows = list(await connection.execute(query))
        letters = [DeadLetter(**row._asdict()) for row in rows[:limit]]
        last = letters[-1] if letters and len(rows) > limit else None
        return DeadLetterPage(
            items=[letter.view() for letter in letters],
            next_cursor=f"{last.dead_lettered_at!r}|{last.task_id}" if last else None,
        )

    async def task_ids(self) -> list[str]:
        async with self._engine.connect() as connection:
            query = select(dead_letters.c.task_id).order_by(dead_letters.c.dead_lettered_at)
            return list((await connection.execute(query)).scalars())

    async def requeued(self, task_id: str) -> None:
        """The task was published again: forget the dead letter, the record is queued."""
        async with self._engine.begin() as connection:
            await connection.execute(delete(dead_letters).where(dead_letters.c.task_id == task_id))
            await connection.execute(
                update(tasks)
                .where(tasks.c.id == task_id)
                .values(status=TaskStatus.QUEUED.value, finished_at=None, next_attempt_at=None)
            )

    async def purge(self) -> int:
        """Delete every dead letter; how many."""
        async with self._engine.begin() as connection:
            outcome = await connection.execute(delete(dead_letters))
        return int(outcome.rowcount or 0)

    async def count(self) -> int:
        async with self._engine.connect() as connection:
            return int(
                (await connection.execute(select(func.count(dead_letters.c.task_id)))).scalar() or 0
            )


def _parse_cursor(cursor: str) -> tuple[float, str]:
    at, separator, task_id = cursor.partition("|")
    try:
        if separator and math.isfinite(float(at)) and task_id and "\x00" not in task_id:
            return float(at), task_id
    except ValueError:
        pass
    raise SubmissionError("cursor: not a cursor this API gave out", field="cursor")
