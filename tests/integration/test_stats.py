"""`Stats.read` on SQLite and on PostgreSQL: counts by status and finished tasks per bucket."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert

from conveyor.config import async_database_url
from conveyor.producer.store.database import TaskStore
from conveyor.producer.store.schema import tasks

NOW_S = 1_767_225_605.0  # 5 s into the bucket that starts at ...600
BUCKET_START_S = 1_767_225_600.0
WINDOW_START_S = BUCKET_START_S + 10 - 600


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[TaskStore]:
    opened = await TaskStore.open(async_database_url(database_url))
    yield opened
    await opened.close()


async def _add(store: TaskStore, rows: list[tuple[str, float | None]]) -> None:
    """Records with these statuses and finished_at, straight into the table."""
    values = [
        {
            "id": f"task-{index:03d}",
            "task": "echo",
            "queue": "default",
            "status": status,
            "progress": 0,
            "payload": {},
            "attempts": 1,
            "max_retries": 3,
            "timeout_s": 300.0,
            "created_at": NOW_S - 700,
            "finished_at": finished_at,
            "published": True,
        }
        for index, (status, finished_at) in enumerate(rows)
    ]
    async with store.engine.begin() as connection:
        await connection.execute(insert(tasks), values)


async def test_stats_count_every_status_and_bucket_finished_tasks_by_ten_seconds(
    store: TaskStore,
) -> None:
    await _add(
        store,
        [
            ("succeeded", NOW_S - 1),  # the bucket now falls in, still filling
            ("succeeded", BUCKET_START_S),  # its first instant
            ("failed", BUCKET_START_S - 0.1),  # the bucket before
            ("failed", BUCKET_START_S - 9.9),
            ("succeeded", WINDOW_START_S),  # the window's first instant
            ("succeeded", WINDOW_START_S - 0.1),  # too old for the chart, still counted
            ("cancelled", NOW_S - 2),  # finished, but neither succeeded nor failed
            ("queued", None),
            ("running", None),
            ("running", None),
        ],
    )
    stats = await store.stats.read(NOW_S)

    assert stats.counts == {
        "scheduled": 0,
        "queued": 1,
        "running": 2,
        "retrying": 0,
        "succeeded": 4,
        "failed": 2,
        "cancelled": 1,
    }
    assert stats.bucket_s == 10 and len(stats.throughput) == 60
    assert stats.throughput[0].at == datetime.fromtimestamp(WINDOW_START_S, UTC)
    assert stats.throughput[-1].at == datetime.fromtimestamp(BUCKET_START_S, UTC)
    gaps = {(b.at - a.at).total_seconds() for a, b in itertools.pairwise(stats.throughput)}
    assert gaps == {10.0}
    moved = {
        i: (p.succeeded, p.failed)
        for i, p in enumerate(stats.throughput)
        if p.succeeded or p.failed
    }
    assert moved == {0: (1, 0), 58: (0, 2), 59: (2, 0)}


async def test_stats_of_an_empty_store_are_zeros(store: TaskStore) -> None:
    stats = await store.stats.read(NOW_S, bucket_s=30, window_s=300)
    assert set(stats.counts.values()) == {0} and len(stats.counts) == 7
    assert len(stats.throughput) == 10
    assert all(p.succeeded == p.failed == 0 for p in stats.throughput)
    assert stats.throughput[-1].at == datetime.fromtimestamp(1_767_225_600.0, UTC)
