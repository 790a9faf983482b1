"""Task counts by status and recent throughput, read from the task store for the dashboard.

Two grouped queries, on indexed columns (status; finished_at). `GET /stats` serves them, the
counts through StatusCounts: with millions of records, counting them all takes seconds, so
they are then counted in the background at intervals and `counted_at` says when.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Integer, cast, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor.producer.schema import tasks
from conveyor.producer.status_counts import StatusCounts
from conveyor.producer.store import TaskStore
from conveyor.shared.records import TaskStatus

BUCKET_S = 10
WINDOW_S = 600
_FINISHED = (TaskStatus.SUCCEEDED.value, TaskStatus.FAILED.value)


class ThroughputPoint(BaseModel):
    """Tasks that finished within one bucket, which starts at `at`."""

    at: datetime
    succeeded: int
    failed: int


class TaskStats(BaseModel):
    """Records per status, and finished tasks per bucket over the window, oldest first."""

    counts: dict[str, int] = Field(description="Every status, with 0 where there is none.")
    throughput: list[ThroughputPoint]
    bucket_s: int = Field(description="Width of each throughput bucket, seconds.")
    counted_at: datetime | None = Field(
        default=None,
        description="When `counts` were read: now, or seconds ago with millions of records.",
    )


async def read_stats(
    connection: AsyncConnection,
    now_s: float,
    *,
    bucket_s: int = BUCKET_S,
    window_s: int = WINDOW_S,
) -> TaskStats:
    """Counts by status, and the buckets of the `window_s` before `now_s` (see read_throughput)."""
    counts = await count_by_status(connection)
    stats = await read_throughput(connection, now_s, bucket_s=bucket_s, window_s=window_s)
    return stats.model_copy(update={"counts": counts})


async def count_by_status(connection: AsyncConnection) -> dict[str, int]:
    """Records per status, every status included (0 where there is none)."""
    counts = {status.value: 0 for status in TaskStatus}
    by_status = select(tasks.c.status, func.count()).group_by(tasks.c.status)
    for status, count in (await connection.execute(by_status)).all():
        counts[status] = int(count)
    return counts


async def read_throughput(
    connection: AsyncConnection,
    now_s: float,
    *,
    bucket_s: int = BUCKET_S,
    window_s: int = WINDOW_S,
) -> TaskStats:
    """The buckets of the `window_s` before `now_s` (the last one, the bucket `now_s` falls
    in, still filling), counts left empty. Buckets are aligned to multiples of `bucket_s`,
    so successive polls see the same buckets."""
    size = max(1, window_s // bucket_s)
    end_s = (now_s // bucket_s + 1) * bucket_s
    start_s = end_s - size * bucket_s
    points = [
        ThroughputPoint(
            at=datetime.fromtimestamp(start_s + index * bucket_s, UTC), succeeded=0, failed=0
        )
        for index in range(size)
    ]
    # The index is computed in a subquery and grouped outside it: PostgreSQL does not match
    # an expression with bound parameters in SELECT to the same one in GROUP BY.
    finished = (
        select(
            _bucket_index(connection, tasks.c.finished_at, start_s, bucket_s).label("bucket"),
            tasks.c.status,
        )
        .where(tasks.c.finished_at >= start_s, tasks.c.finished_at < end_s)
        .where(tasks.c.status.in_(_FINISHED))
        .subquery()
    )
    per_bucket = select(finished.c.bucket, finished.c.status, func.count()).group_by(
        finished.c.bucket, finished.c.status
    )
    for index, status, count in (await connection.execute(per_bucket)).all():
        if 0 <= index < size:  # float edges at the window's ends
            point = points[int(index)]
            if status == TaskStatus.SUCCEEDED.value:
                point.succeeded += int(count)
            else:
                point.failed += int(count)
    return TaskStats(
        counts={},
        throughput=points,
        bucket_s=bucket_s,
        counted_at=datetime.fromtimestamp(now_s, UTC),
    )


def _bucket_index(
    connection: AsyncConnection, finished_at: ColumnElement[float], start_s: float, bucket_s: int
) -> ColumnElement[int]:
    offset = (finished_at - start_s) / bucket_s
    if connection.dialect.name == "sqlite":
        # SQLite may lack floor(); CAST truncates, which is floor for these offsets (>= 0).
        return cast(offset, Integer)
    return cast(func.floor(offset), Integer)  # PostgreSQL's CAST rounds


def stats_routes(
    store: Callable[[], TaskStore], clock: Callable[[], float] = time.time
) -> APIRouter:
    """`GET /stats` over the producer's store (503 until it is open)."""
    router = APIRouter(tags=["records"])
    status_counts = StatusCounts(clock)

    @router.get("/stats", response_model=TaskStats)
    async def get_stats() -> TaskStats:
        """Records per status, and tasks finished per 10 s over the last 10 minutes."""
        engine = store().engine

        async def count() -> dict[str, int]:
            async with engine.connect() as connection:
                return await count_by_status(connection)

        counted = await status_counts.read(count)
        async with engine.connect() as connection:
            stats = await read_throughput(connection, clock())
        return stats.model_copy(
            update={"counts": counted.counts, "counted_at": datetime.fromtimestamp(counted.at, UTC)}
        )

    return router
