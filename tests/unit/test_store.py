"""The task store on SQLite: migrations, event ordering, retention, the outbox."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import create_async_engine

from conveyor.producer.store.database import TaskStore
from conveyor.producer.store.events import progress_of
from conveyor.producer.store.schema import (
    BACKLOG_INDEXES,
    MIGRATIONS,
    latest_version,
    migrate,
    schema_version,
)
from conveyor.producer.store.submissions import NewTask
from conveyor.producer.workers.store import WorkerStore
from conveyor.shared.envelope import TaskMessage
from conveyor.shared.events import make_event
from conveyor.shared.ids import new_task_id
from conveyor.shared.records import TaskStatus


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TaskStore]:
    opened = await TaskStore.open(f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}", 64)
    yield opened
    await opened.close()


async def _queued(store: TaskStore, **payload: object) -> str:
    message = TaskMessage(id=new_task_id(), task="echo", queue="default", payload=dict(payload))
    [(record, created)] = await store.submissions.add([NewTask(message, 3, 300.0)])
    assert created and record.status is TaskStatus.QUEUED
    return record.id


async def test_migrations_run_once_and_record_the_version(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    try:
        for _ in range(2):  # the second run finds nothing to do
            async with engine.begin() as connection:
                assert await migrate(connection) == latest_version() == len(MIGRATIONS)
        async with engine.connect() as connection:
            versions = (await connection.execute(select(schema_version.c.version))).all()
        assert [row.version for row in versions] == [len(MIGRATIONS)]
    finally:
        await engine.dispose()


async def test_version_1_data_survives_the_migration_to_the_latest(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: schema_version.create(sync))
        await connection.execute(schema_version.insert().values(id=1, version=1))
        await connection.run_sync(MIGRATIONS[0])
        await connection.execute(
            text(
                "INSERT INTO conveyor_tasks (id, task, queue, status, progress, payload, "
                "attempts, max_retries, timeout_s, created_at, published) VALUES "
                "('old-1', 'echo', 'default', 'succeeded', 7, '{\"a\": 1}', 1, 3, 300, 1.0, 1)"
            )
        )
    await engine.dispose()
    store = await TaskStore.open(url)
    try:
        record = await store.records.get("old-1")
        assert record is not None and record.payload == {"a": 1}
        assert record.status is TaskStatus.SUCCEEDED and record.next_attempt_at is None
    finally:
        await store.close()


async def _database_at_version(url: str, version: int, insert_sql: str) -> None:
    """A database migrated only to `version`, holding the rows of `insert_sql`."""
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: schema_version.create(sync))
        await connection.execute(schema_version.insert().values(id=1, version=version))
        for migration in MIGRATIONS[:version]:
            await connection.run_sync(migration)
        await connection.execute(text(insert_sql))
    await engine.dispose()


async def test_a_version_4_worker_registry_gains_addresses_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    await _database_at_version(
        url,
        4,
        "INSERT INTO conveyor_workers (id, hostname, pid, cpu_count, concurrency, queues, "
        "version, started_at, last_heartbeat_at, heartbeat_s, state, running, processed, "
        "failed) VALUES ('h:1:a', 'h', 1, 4, 1, '[\"default\"]', '0.1.0', 1.0, 2.0, 5.0, "
        "'offline', '[]', 3, 0)",
    )
    store = await TaskStore.open(url)
    try:
        [worker] = await WorkerStore(store.engine).list(now=3.0)
        assert (worker.id, worker.address, worker.processed) == ("h:1:a", None, 3)
    finally:
        await store.close()


async def test_a_version_6_task_table_gains_the_backlog_indexes_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    await _database_at_version(
        url,
        6,
        "INSERT INTO conveyor_tasks (id, task, queue, status, progress, payload, "
        "attempts, max_retries, timeout_s, created_at, published, due_at) VALUES "
        "('old-q', 'echo', 'default', 'queued', 0, '{}', 0, 3, 300, 1.0, 0, NULL), "
        "('old-s', 'echo', 'default', 'scheduled', 0, '{}', 0, 3, 300, 2.0, 0, 9e9)",
    )
    store = await TaskStore.open(url)
    try:
        async with store.engine.connect() as connection:
            # sqlite_master, not inspect(): SQLAlchemy skips expression indexes, with a warning.
            listed = await connection.execute(
                text("SELECT name FROM sqlite_master WHERE tbl_name = 'conveyor_tasks'")
            )
            names = set(listed.scalars())
        assert {index.name for index in BACKLOG_INDEXES} <= names
        assert [m.id for m in await store.submissions.unpublished(time.time())] == ["old-q"]
        page = await store.records.list(status=TaskStatus.QUEUED, task="echo")
        assert [record.id for record in page.items] == ["old-q"]
    finally:
        await store.close()


async def test_a_database_from_a_newer_conveyor_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    await (await TaskStore.open(url)).close()  # migrated once
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.execute(update(schema_version).values(version=latest_version() + 1))
    await engine.dispose()
    with pytest.raises(RuntimeError, match="newer than this Conveyor"):
        await TaskStore.open(url)


def test_progress_orders_runs_first_then_states() -> None:
    assert progress_of(1, TaskStatus.RUNNING) < progress_of(1, TaskStatus.SUCCEEDED)
    assert progress_of(1, TaskStatus.FAILED) < progress_of(2, TaskStatus.RUNNING)
    assert progress_of(1, TaskStatus.FAILED) == progress_of(1, TaskStatus.SUCCEEDED)


async def test_events_in_any_order_end_in_the_same_record(store: TaskStore) -> None:
    task_id = await _queued(store)
    started = time.time()
    running = make_event(task_id, "echo", TaskStatus.RUNNING, 1, "w", started_at=started)
    done = make_event(task_id, "echo", TaskStatus.SUCCEEDED, 1, "w", started_at=started, result=7)
    assert await store.events.apply([done, running, done]) == {task_id}
    record = await store.records.get(task_id)
    assert record is not None
    assert (record.status, record.result, record.attempts) == (TaskStatus.SUCCEEDED, 7, 1)
    await store.events.apply([running])
    assert (await store.records.get(task_id)) == record


async def test_a_redelivered_run_counts_as_an_attempt(store: TaskStore) -> None:
    task_id = await _queued(store)
    await store.events.apply([make_event(task_id, "echo", TaskStatus.RUNNING, 1, "w1")])
    await store.events.apply([make_event(task_id, "echo", TaskStatus.SUCCEEDED, 1, "w2", run=2)])
    record = await store.records.get(task_id)
    assert record is not None and (record.attempts, record.worker) == (2, "w2")


async def test_an_oversized_result_fails_the_task(store: TaskStore) -> None:
    task_id = await _queued(store)
    event = make_event(task_id, "echo", TaskStatus.SUCCEEDED, 1, "w", result="x" * 100)
    await store.events.apply([event])
    record = await store.records.get(task_id)
    assert record is not None and record.status is TaskStatus.FAILED
    assert record.error is not None and record.error.type == "ResultTooLarge"
    assert record.result is None


async def test_events_for_unknown_tasks_change_nothing(store: TaskStore) -> None:
    await store.events.apply([make_event("ghost", "echo", TaskStatus.SUCCEEDED, 1, "w")])
    assert await store.records.get("ghost") is None


async def test_purge_removes_only_finished_records_past_the_ttl(store: TaskStore) -> None:
    finished, waiting = await _queued(store), await _queued(store)
    await store.events.apply([make_event(finished, "echo", TaskStatus.SUCCEEDED, 1, "w")])
    assert await store.retention.purge(time.time() - 60) == 0
    assert await store.retention.purge(time.time() + 1) == 1
    assert (
        await store.records.get(finished) is None and await store.records.get(waiting) is not None
    )


async def test_the_outbox_holds_what_was_never_confirmed(store: TaskStore) -> None:
    confirmed, orphan = await _queued(store), await _queued(store, o=1)
    await store.submissions.mark_published([confirmed])
    assert await store.submissions.unpublished(time.time() - 60) == []
    [message] = await store.submissions.unpublished(time.time() + 1)
    assert (message.id, message.payload, message.max_retries) == (orphan, {"o": 1}, 3)
    await store.submissions.discard([orphan, confirmed])  # only unpublished records are discarded
    assert (
        await store.records.get(orphan) is None and await store.records.get(confirmed) is not None
    )
