"""The store's own asyncpg connections (producer/store/direct.py), on a real PostgreSQL.

Submissions INSERT and mark rows on them instead of the engine's pool, so they must survive
what the pool survives: the server dropping a connection, a statement cancelled midway.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from conveyor.config.store import async_database_url
from conveyor.producer.store.database import TaskStore
from conveyor.producer.store.direct import PING_IDLE_S, DirectConnection
from conveyor.producer.store.submissions import NewTask
from conveyor.shared.envelope import TaskMessage
from conveyor.shared.errors import StoreUnavailable
from conveyor.shared.ids import new_task_id
from conveyor.shared.records import TaskRecord, TaskStatus


def _new(key: str | None = None) -> NewTask:
    message = TaskMessage(id=new_task_id(), task="echo", queue="default", payload={"k": [1]})
    return NewTask(message, 3, 300.0, key)


async def _terminate_others(url: str, admin: asyncpg.Connection) -> int:
    """Kill every connection to `url`'s database but the admin's; how many."""
    database = url.rsplit("/", 1)[1]
    return int(
        await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    )


async def _add_soon(store: TaskStore, key: str | None = None) -> tuple[TaskRecord, int]:
    """Add one task, trying again on a connection error for up to 10 s; (record, failures)."""
    failures = 0
    async with asyncio.timeout(10):
        while True:
            try:
                [(record, _)] = await store.submissions.add([_new(key)])
                return record, failures
            except StoreUnavailable:  # the API's 503
                failures += 1


async def test_submissions_outlive_the_server_dropping_their_connections(
    postgres_url: str,
) -> None:
    store = await TaskStore.open(async_database_url(postgres_url))
    admin = await asyncpg.connect(postgres_url)
    try:
        [(first, _)] = await store.submissions.add([_new()])
        await store.submissions.mark_published([first.id])
        assert await _terminate_others(postgres_url, admin) >= 2  # pool, inserts, marks

        # Right away, one submission may fail before the client sees the close (the pool
        # behaves the same): it gets StoreUnavailable (503); the next one gets through.
        second, failures = await _add_soon(store)
        assert failures <= 1
        await asyncio.sleep(PING_IDLE_S + 0.1)  # idle long enough to be pinged first
        await _terminate_others(postgres_url, admin)
        third, failures = await _add_soon(store, "key-3")
        assert failures == 0
        await store.submissions.mark_published([second.id, third.id])

        rows = await admin.fetch("SELECT id, status, published, payload FROM conveyor_tasks")
        assert {(r["id"], r["status"], r["published"]) for r in rows} == {
            (task.id, TaskStatus.QUEUED.value, True) for task in (first, second, third)
        }
        assert {r["payload"] for r in rows} == {'{"k": [1]}'}
    finally:
        await admin.close()
        await store.close()


async def test_a_cancelled_statement_leaves_the_connection_usable(postgres_url: str) -> None:
    store = await TaskStore.open(async_database_url(postgres_url))
    direct = DirectConnection(store.engine)
    try:
        sleeping = asyncio.create_task(direct.execute("SELECT pg_sleep(30)"))
        await asyncio.sleep(0.2)
        sleeping.cancel()
        await asyncio.gather(sleeping, return_exceptions=True)
        async with asyncio.timeout(5):  # not stuck behind the cancelled statement
            await direct.execute("SELECT 1")
        with pytest.raises(StoreUnavailable):  # a refused statement: our error, not asyncpg's
            await direct.execute("SELECT 1/0")
        await direct.execute("SELECT 1")
    finally:
        await direct.close()
        await store.close()
