"""What the HTTP API does with schedules: validate, store, and show them with their next
run times and the replica that leads the scheduler."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from conveyor.producer.scheduling.leader import LeaderStatus
from conveyor.producer.scheduling.scheduler import task_submission
from conveyor.producer.scheduling.schedules import (
    Schedule,
    ScheduleDefinition,
    ScheduleFields,
    next_runs,
)
from conveyor.producer.scheduling.store import ScheduleStore
from conveyor.producer.submission.submitter import Submitter
from conveyor.shared.errors import ScheduleNotFound


class ScheduleView(ScheduleFields):
    """A schedule as the API shows it; times are ISO 8601 UTC."""

    next_runs: list[datetime] = Field(description="The next 5 ticks; none while paused.")
    last_tick_at: datetime | None = Field(description="The latest tick fired or skipped.")
    created_at: datetime
    updated_at: datetime


class SchedulePage(BaseModel):
    """Schedules by name; pass `next_cursor` back as `cursor` for the next page."""

    items: list[ScheduleView]
    next_cursor: str | None = None
    leader: str | None = Field(description="Replica id of the scheduler leader; null: none.")
    this_replica: str = Field(description="Replica id of the producer that answered.")


class ScheduleDesk:
    """Schedule operations over the shared store; validation is the submissions' own."""

    def __init__(
        self,
        store: ScheduleStore,
        submitter: Submitter,
        leadership: LeaderStatus,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._submitter = submitter
        self._leadership = leadership
        self._clock = clock

    async def page(self, limit: int, cursor: str | None) -> SchedulePage:
        items, next_cursor = await self.store.page(limit, cursor)
        return SchedulePage(
            items=[self.view(item) for item in items],
            next_cursor=next_cursor,
            leader=await self._leadership.leader(),
            this_replica=self._leadership.replica_id,
        )

    async def get(self, name: str) -> ScheduleView:
        schedule = await self.store.get(name)
        if schedule is None:
            raise ScheduleNotFound(name)
        return self.view(schedule)

    async def put(self, name: str, definition: ScheduleDefinition) -> tuple[ScheduleView, bool]:
        """Create or replace `name`: SubmissionError naming the field if its task could not
        be submitted (unknown task, payload, queue, time limit)."""
        self._submitter.prepare(task_submission(definition))
        schedule, created = await self.store.put(name, definition, "api", self._clock())
        return self.view(schedule), created

    async def delete(self, name: str) -> None:
        if not await self.store.delete(name):
            raise ScheduleNotFound(name)

    async def set_paused(self, name: str, paused: bool) -> ScheduleView:
        schedule = await self.store.set_paused(name, paused, self._clock())
        if schedule is None:
            raise ScheduleNotFound(name)
        return self.view(schedule)

    def view(self, schedule: Schedule) -> ScheduleView:
        runs = [] if schedule.paused else next_runs(schedule.cron, schedule.timezone, self._clock())
        fields = schedule.model_dump(exclude={"last_tick_at", "created_at", "updated_at"})
        return ScheduleView(
            **fields,
            next_runs=[_time(run) for run in runs],
            last_tick_at=None if schedule.last_tick_at is None else _time(schedule.last_tick_at),
            created_at=_time(schedule.created_at),
            updated_at=_time(schedule.updated_at),
        )


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
