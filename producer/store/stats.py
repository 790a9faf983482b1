"""Task counts by status, recent throughput and the oldest waiting task, for the dashboard
(`GET /stats`) and the gauges of `/metrics`.

Grouped queries on indexed columns (status; finished_at). The counts go through
StatusCounts: with millions of records counting them all takes seconds, so they are then
counted in the background at intervals, and `counted_at` says when.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Integer, cast, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conveyor.producer.store.schema import tasks
from conveyor.producer.store.status_counts import StatusCounts
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


class Stats:
    """Aggregates over the task records: nothing here reads a single record."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._status_counts = StatusCounts()

    async def read(
        self, now_s: float, *, bucket_s: int = BUCKET_S, window_s: int = WINDOW_S
    ) -> TaskStats:
        """Counts by status (see StatusCounts), and the buckets of the `window_s` before
        `now_s` (the last one, the bucket `now_s` falls in, still filling). Buckets are
        aligned to multiples of `bucket_s`, so successive polls see the same buckets."""
        counted = await self._status_counts.read(self.count_by_status)
        async with self._engine.connect() as connection:
            points = await _throughput(connection, now_s, bucket_s=bucket_s, window_s=window_s)
        return TaskStats(
            counts=counted.counts,
            throughput=points,
            bucket_s=bucket_s,
            counted_at=datetime.fromtimestamp(counted.at, UTC),
        )

    async def close(self) -> None:
        """End the background counts (before the engine is disposed)."""
        await self._status_counts.close()

    async def count_by_status(self) -> dict[str, int]:
        """Records per status, every status included (0 where there is none)."""
        counts = {status.value: 0 for status in TaskStatus}
        by_status = select(tasks.c.status, func.count()).group_by(tasks.c.status)
        async with self._engine.connect() as connection:
            for status, count in (await connection.execute(by_status)).all():
                counts[status] = int(count)
        return counts

    async def oldest_queued_at(self) -> float | None:
        """When the task waiting longest in `queued` was due (its creation, unless delayed)."""
        query = select(func.min(func.coalesce(tasks.c.due_at, tasks.c.created_at))).where(
            tasks.c.status == TaskStatus.QUEUED.value
        )
        async with self._engine.connect() as connection:
            oldest = (await connection.execute(query)).scalar()
        return None if oldest is None else float(oldest)


async def _throughput(
    connection: AsyncConnection, now_s: float, *, bucket_s: int, window_s: int
) -> list[ThroughputPoint]:
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
    return points


def _bucket_index(
    connection: AsyncConnection, finished_at: ColumnElement[float], start_s: float, bucket_s: int
) -> ColumnElement[int]:
    offset = (finished_at - start_s) / bucket_s
    if connection.dialect.name == "sqlite":
        # SQLite may lack floor(); CAST truncates, which is floor for these offsets (>= 0).
        return cast(offset, Integer)
    return cast(func.floor(offset), Integer)  # PostgreSQL's CAST rounds
