"""The outbox side of task records: a submission is written unpublished, marked published
once the broker confirmed it, discarded if the broker refused it, and re-sent by the sweeper
if its producer never heard back."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asyncpg import UniqueViolationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor.producer.store.direct import DirectConnection
from conveyor.producer.store.rows import message_of, record_of, time_of
from conveyor.producer.store.schema import json_dumps, tasks
from conveyor.shared.envelope import TaskMessage
from conveyor.shared.records import TaskRecord, TaskStatus

INSERT_TRIES = 3


@dataclass(frozen=True, slots=True)
class NewTask:
    """A task to record: the message to publish plus what the record shows besides it."""

    message: TaskMessage
    max_retries: int
    timeout_s: float
    idempotency_key: str | None = None
    due_at: float | None = None  # a delayed task: recorded `scheduled`, published when due


class Submissions:
    """Writes submitted tasks and follows them through their publish (the outbox)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # PostgreSQL: the INSERT and the marks skip SQLAlchemy (see direct.py), each one
        # statement in its own transaction, one round trip.
        postgres = engine.dialect.name == "postgresql"
        self._inserts = DirectConnection(engine) if postgres else None
        self._marks = DirectConnection(engine) if postgres else None

    async def close(self) -> None:
        for direct in (self._inserts, self._marks):
            if direct is not None:
                await direct.close()

    async def add(self, entries: Sequence[NewTask]) -> list[tuple[TaskRecord, bool]]:
        """Record `entries` as queued, unpublished; (record, created) in the same order.

        An entry whose idempotency key is known already gets the original record and
        created=False. Concurrent duplicates are settled by the unique key: the losers'
        insert fails, and they read the winner's record.
        """
        for _ in range(INSERT_TRIES):
            known = await self._by_keys({e.idempotency_key for e in entries} - {None})
            fresh: dict[str, NewTask] = {}  # idempotency key or id -> entry to insert
            for entry in entries:
                key = entry.idempotency_key or entry.message.id
                if key not in known and key not in fresh:
                    fresh[key] = entry
            try:
                if fresh:
                    await self._insert([_row(e) for e in fresh.values()])
            except (IntegrityError, UniqueViolationError):
                continue  # a concurrent submission took a key first: read it, then retry
            results = []
            for entry in entries:
                key = entry.idempotency_key or entry.message.id
                if key in known:
                    results.append((known[key], False))
                else:  # a key twice in one batch: the second gets the first's record
                    results.append((_record_of_new(fresh[key]), fresh[key] is entry))
            return results
        raise RuntimeError("idempotency keys kept colliding; giving up")

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        """All `rows` or none (SQLite's executemany is atomic only inside BEGIN)."""
        if self._inserts is None:
            async with self._engine.begin() as connection:
                await connection.execute(tasks.insert(), rows)
            return
        columns = tuple(rows[0])  # every row has the same keys (_row)
        values = (tuple(_postgres_value(c, row[c]) for c in columns) for row in rows)
        await self._inserts.executemany(_insert_statement(columns), values)

    async def _by_keys(self, keys: set[str | None]) -> dict[str, TaskRecord]:
        if not keys:
            return {}
        async with self._engine.connect() as connection:
            rows = await connection.execute(select(tasks).where(tasks.c.idempotency_key.in_(keys)))
            return {row.idempotency_key: record_of(row) for row in rows}

    async def mark_published(self, ids: Sequence[str]) -> None:
        """The broker confirmed these tasks: they leave the outbox.

        The rows are locked in id order first, as the Recorder's updates lock them, so the
        two never deadlock over the same rows (an UPDATE ... IN locks in scan order).
        """
        if self._marks is not None:
            await self._marks.execute(_MARK_PUBLISHED, list(ids))
            return
        async with self._engine.begin() as connection:
            locking = select(tasks.c.id).where(tasks.c.id.in_(ids)).order_by(tasks.c.id)
            await connection.execute(locking.with_for_update())
            await connection.execute(
                update(tasks).where(tasks.c.id.in_(ids)).values(published=True)
            )

    async def discard(self, ids: Sequence[str]) -> None:
        """Forget tasks whose publish failed: the client was told they were not accepted."""
        async with self._engine.begin() as connection:
            await connection.execute(
                delete(tasks).where(tasks.c.id.in_(ids), tasks.c.published.is_(False))
            )

    async def unpublished(self, created_before: float, limit: int = 500) -> list[TaskMessage]:
        """Records the broker never confirmed (their producer died mid-publish, or the confirm
        did not come in time)."""
        query = (
            select(tasks)
            .where(
                tasks.c.published.is_(False),
                func.coalesce(tasks.c.due_at, tasks.c.created_at) < created_before,
                # Not `scheduled` (not due yet) and not started: a task whose unconfirmed
                # publish reached the queue after all has moved on, and needs no re-send.
                tasks.c.status == TaskStatus.QUEUED.value,
            )
            .order_by(tasks.c.created_at)
            .limit(limit)
        )
        async with self._engine.connect() as connection:
            return [message_of(row) for row in await connection.execute(query)]


# mark_published's two statements in one: lock the rows in id order, then update them.
_MARK_PUBLISHED = f"""
    UPDATE {tasks.name} SET published = true
    FROM (SELECT id FROM {tasks.name} WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE) AS locked
    WHERE {tasks.name}.id = locked.id
"""
_JSON_COLUMNS = frozenset({"payload", "result", "error"})


@functools.cache  # one set of columns (_row's): built once, not for every group
def _insert_statement(columns: tuple[str, ...]) -> str:
    places = ", ".join(f"${index}" for index in range(1, len(columns) + 1))
    return f"INSERT INTO {tasks.name} ({', '.join(columns)}) VALUES ({places})"


def _postgres_value(column: str, value: Any) -> Any:
    """asyncpg's form of a column value: JSON columns go as JSON text."""
    return json_dumps(value) if column in _JSON_COLUMNS and value is not None else value


def _status_of_new(entry: NewTask) -> TaskStatus:
    return TaskStatus.QUEUED if entry.due_at is None else TaskStatus.SCHEDULED


def _row(entry: NewTask) -> dict[str, Any]:
    message = entry.message
    return {
        "id": message.id,
        "task": message.task,
        "queue": message.queue,
        "status": _status_of_new(entry).value,
        "due_at": entry.due_at,
        "progress": 0,
        "payload": message.payload,
        "attempts": 0,
        "max_retries": entry.max_retries,
        "timeout_s": entry.timeout_s,
        "idempotency_key": entry.idempotency_key,
        "request_id": message.request_id,
        "created_at": message.created_at.timestamp(),
        "published": False,
    }


def _record_of_new(entry: NewTask) -> TaskRecord:
    message = entry.message
    # Built from values validated already: no second validation on every submission's path.
    return TaskRecord.model_construct(
        id=message.id,
        task=message.task,
        queue=message.queue,
        status=_status_of_new(entry),
        payload=message.payload,
        attempts=0,
        max_retries=entry.max_retries,
        timeout_s=entry.timeout_s,
        idempotency_key=entry.idempotency_key,
        request_id=message.request_id,
        created_at=message.created_at,
        eta=time_of(entry.due_at),
    )
