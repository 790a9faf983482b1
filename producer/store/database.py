"""The task store: one row per task, written by submissions and by consumers' status events.

The producer owns it; consumers never open the database. Events can arrive late, twice or
out of order (several producer replicas apply them concurrently), so every update is guarded
by an ordering key in SQL: `progress = run * 4 + rank(state)`, where `run` counts the
starts of the task. An update applies only if its key is higher and the task is not yet
terminal, so nothing ever moves a task backwards.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Row, bindparam, delete, event, func, select, update
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from conveyor.producer.store.schema import (
    check_version,
    current_version,
    json_dumps,
    latest_version,
    migrate,
    tasks,
)
from conveyor.shared.envelope import TaskMessage
from conveyor.shared.errors import SubmissionError
from conveyor.shared.events import TaskEvent, TaskState
from conveyor.shared.ids import is_task_id
from conveyor.shared.records import TERMINAL_VALUES, TaskError, TaskPage, TaskRecord, TaskStatus

log = logging.getLogger(__name__)

# A run starts (running) and ends one way: retrying, succeeded or failed.
_RANK = {TaskState.RUNNING: 1, TaskState.RETRYING: 3, TaskState.SUCCEEDED: 3, TaskState.FAILED: 3}
_FINAL_STATES = (TaskState.SUCCEEDED, TaskState.FAILED)
APPLY_TRIES = 3
# A pooled connection idle this long is pinged before use (see _ping_when_idle).
PING_IDLE_S = 1.0


def progress_of(run: int, state: TaskState) -> int:
    """The ordering key of an event: later runs first, then the state within a run."""
    return run * 4 + _RANK[state]


@dataclass(frozen=True, slots=True)
class NewTask:
    """A task to record: the message to publish plus what the record shows besides it."""

    message: TaskMessage
    max_retries: int
    timeout_s: float
    idempotency_key: str | None = None
    due_at: float | None = None  # a delayed task: recorded `scheduled`, published when due


class TaskStore:
    """Task records in SQLite (aiosqlite) or PostgreSQL (asyncpg), through SQLAlchemy Core."""

    def __init__(self, engine: AsyncEngine, max_result_bytes: int) -> None:
        self.engine = engine
        self._max_result_bytes = max_result_bytes
        # PostgreSQL runs one INSERT statement (executemany included: asyncpg makes it
        # atomic) as its own transaction: one round trip instead of BEGIN, INSERT, COMMIT.
        # SQLite's executemany is not atomic without BEGIN: it keeps the transaction.
        self._insert_engine = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql"
            else engine
        )

    @classmethod
    async def open(
        cls, url: str, max_result_bytes: int = 1_048_576, *, auto_migrate: bool = True
    ) -> TaskStore:
        """Connect to the database at `url` (async driver form) and migrate its schema;
        without `auto_migrate`, SchemaOutdated if it needs migrating."""
        engine = _engine(url)
        store = cls(engine, max_result_bytes)
        try:
            async with engine.begin() as connection:
                await (migrate(connection) if auto_migrate else check_version(connection))
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def close(self) -> None:
        await self.engine.dispose()

    # Submissions -----------------------------------------------------------------------

    async def add(self, entries: Sequence[NewTask]) -> list[tuple[TaskRecord, bool]]:
        """Record `entries` as queued, unpublished; (record, created) in the same order.

        An entry whose idempotency key is known already gets the original record and
        created=False. Concurrent duplicates are settled by the unique key: the losers'
        insert fails, and they read the winner's record.
        """
        for _ in range(APPLY_TRIES):
            known = await self._by_keys({e.idempotency_key for e in entries} - {None})
            fresh: dict[str, NewTask] = {}  # idempotency key or id -> entry to insert
            for entry in entries:
                key = entry.idempotency_key or entry.message.id
                if key not in known and key not in fresh:
                    fresh[key] = entry
            try:
                if fresh:
                    async with self._insert_engine.begin() as connection:
                        await connection.execute(tasks.insert(), [_row(e) for e in fresh.values()])
            except IntegrityError:
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

    async def _by_keys(self, keys: set[str | None]) -> dict[str, TaskRecord]:
        if not keys:
            return {}
        async with self.engine.connect() as connection:
            rows = await connection.execute(select(tasks).where(tasks.c.idempotency_key.in_(keys)))
            return {row.idempotency_key: _record(row) for row in rows}

    async def mark_published(self, ids: Sequence[str]) -> None:
        """The broker confirmed these tasks: they leave the outbox."""
        async with self.engine.begin() as connection:
            await connection.execute(
                update(tasks).where(tasks.c.id.in_(ids)).values(published=True)
            )

    async def discard(self, ids: Sequence[str]) -> None:
        """Forget tasks whose publish failed: the client was told they were not accepted."""
        async with self.engine.begin() as connection:
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
        async with self.engine.connect() as connection:
            return [_message(row) for row in await connection.execute(query)]

    # Reading ---------------------------------------------------------------------------

    async def get(self, task_id: str) -> TaskRecord | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(select(tasks).where(tasks.c.id == task_id))).first()
        return None if row is None else _record(row)

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
        async with self.engine.connect() as connection:
            rows = list(await connection.execute(query))
        items = [_record(row) for row in rows[:limit]]
        more = len(rows) > limit
        return TaskPage(items=items, next_cursor=items[-1].id if more and items else None)

    async def claim_due(self, now: float, limit: int = 500) -> builtins.list[TaskMessage]:
        """Move delayed tasks that are due from `scheduled` to `queued` (unpublished, so the
        outbox covers a crash before their publish); the messages to publish. Replicas
        claiming at once get disjoint sets: the update only takes rows still `scheduled`."""
        due = (
            select(tasks.c.id)
            .where(tasks.c.status == TaskStatus.SCHEDULED.value, tasks.c.due_at <= now)
            .order_by(tasks.c.due_at)
            .limit(limit)
        )
        async with self.engine.begin() as connection:
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
            return [_message(row) for row in claimed]

    async def next_due(self) -> float | None:
        """When the earliest delayed task is due."""
        query = select(func.min(tasks.c.due_at)).where(tasks.c.status == TaskStatus.SCHEDULED.value)
        async with self.engine.connect() as connection:
            due = (await connection.execute(query)).scalar()
        return None if due is None else float(due)

    async def cancel(self, task_id: str, now: float) -> TaskRecord | None:
        """Mark a task cancelled unless it already finished; the record as it is now."""
        async with self.engine.begin() as connection:
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
        return None if row is None else _record(row)

    async def cancelled_since(self, since: float, limit: int = 10_000) -> builtins.list[str]:
        """Ids of tasks cancelled since `since` (a consumer starting up honours them)."""
        query = (
            select(tasks.c.id)
            .where(tasks.c.status == TaskStatus.CANCELLED.value, tasks.c.finished_at >= since)
            .order_by(tasks.c.finished_at.desc())
            .limit(limit)
        )
        async with self.engine.connect() as connection:
            return list((await connection.execute(query)).scalars())

    async def count_redelivery(self, task_id: str) -> int:
        """Count one more redelivery of `task_id`; how many so far (0: no such record)."""
        statement = (
            update(tasks)
            .where(tasks.c.id == task_id)
            .values(deliveries=tasks.c.deliveries + 1)
            .returning(tasks.c.deliveries)
        )
        async with self.engine.begin() as connection:
            return int((await connection.execute(statement)).scalar() or 0)

    async def terminal(self, ids: Iterable[str]) -> set[str]:
        """Which of `ids` have reached a terminal status."""
        query = select(tasks.c.id).where(
            tasks.c.id.in_(list(ids)), tasks.c.status.in_(TERMINAL_VALUES)
        )
        async with self.engine.connect() as connection:
            return set((await connection.execute(query)).scalars())

    # Events ----------------------------------------------------------------------------

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
                if self.engine.dialect.name == "postgresql"
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
                async with self.engine.begin() as connection:
                    await connection.execute(statement, params)
                break
            except DBAPIError as error:
                if attempt == APPLY_TRIES or error.connection_invalidated:
                    raise
                log.info("applying %d events lost a race (%s); retrying", len(params), error)
        return {e.task_id for e in events if e.state in _FINAL_STATES}

    def _params(self, event: TaskEvent) -> dict[str, Any]:
        state, result, error = event.state, event.result, event.error
        if state is TaskState.SUCCEEDED:
            size = len(orjson.dumps(result))
            if size > self._max_result_bytes:
                state, result = TaskState.FAILED, None
                error = _result_too_large(size, self._max_result_bytes)
        terminal = state in _FINAL_STATES
        return {
            "b_id": event.task_id,
            "b_progress": progress_of(event.run, state),
            "b_status": state.value,
            "b_run": event.run,
            "b_worker": event.worker,
            "b_started_at": event.started_at or event.at,
            "b_finished_at": event.at if terminal else None,
            "b_result": result if state is TaskState.SUCCEEDED else None,
            "b_error": error if state in (TaskState.FAILED, TaskState.RETRYING) else None,
            "b_next_attempt_at": event.retry_at if state is TaskState.RETRYING else None,
        }

    # Retention -------------------------------------------------------------------------

    async def purge(self, finished_before: float) -> int:
        """Delete terminal records that finished before `finished_before`; how many."""
        async with self.engine.begin() as connection:
            outcome = await connection.execute(
                delete(tasks).where(
                    tasks.c.status.in_(TERMINAL_VALUES), tasks.c.finished_at < finished_before
                )
            )
        return int(outcome.rowcount or 0)


def _result_too_large(size: int, limit: int) -> dict[str, str]:
    return {
        "type": "ResultTooLarge",
        "message": f"the result is {size} bytes as JSON, over CONVEYOR_MAX_RESULT_BYTES={limit}",
    }


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Check a pooled connection at checkout only if it sat idle for PING_IDLE_S or more.

    SQLAlchemy's pool_pre_ping checks every checkout, and on asyncpg its ping is three round
    trips (BEGIN, a query, ROLLBACK): more than the INSERT of a submission. A connection used
    a moment ago is alive as far as a ping can tell; one the server may have dropped while it
    sat in the pool is checked, and replaced if dead (the pool retries the checkout).
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(
        connection: DBAPIConnection, record: ConnectionPoolEntry, _: PoolProxiedConnection
    ) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_IDLE_S:
            return
        try:
            connection.ping()
        except Exception as error:
            raise DisconnectionError(f"pooled connection is dead: {error!r}") from error


def _tune_sqlite(connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
    """WAL lets readers run beside the writer; NORMAL sync is safe with WAL and much faster."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


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


def _time(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _record(row: Row[Any]) -> TaskRecord:
    created_at = _time(row.created_at)
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
        started_at=_time(row.started_at),
        finished_at=_time(row.finished_at),
        next_attempt_at=_time(row.next_attempt_at),
        eta=_time(row.due_at),
    )


def _record_of_new(entry: NewTask) -> TaskRecord:
    message = entry.message
    return TaskRecord(
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
        eta=_time(entry.due_at),
    )


def _message(row: Row[Any]) -> TaskMessage:
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


async def migrate_database(url: str) -> tuple[int, int]:
    """Bring the database at `url` to the schema this code needs (`conveyor migrate`):
    (the version it had, the version it has now)."""
    engine = _engine(url)
    try:
        async with engine.begin() as connection:
            before = await current_version(connection)
            await migrate(connection)
    finally:
        await engine.dispose()
    return before, latest_version()


async def schema_versions(url: str) -> tuple[int, int]:
    """(the database's schema version, the one this code needs), changing nothing."""
    engine = _engine(url)
    try:
        async with engine.connect() as connection:
            return await current_version(connection), latest_version()
    finally:
        await engine.dispose()


def _engine(url: str) -> AsyncEngine:
    engine = create_async_engine(url, json_serializer=json_dumps, json_deserializer=orjson.loads)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _tune_sqlite)
    else:
        # A server can drop idle connections; a SQLite file cannot.
        _ping_when_idle(engine)
    return engine
