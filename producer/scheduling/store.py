"""Schedules in the task database (table `conveyor_schedules`), shared by every replica.

Every replica serves the API over it; the scheduler leader reads it each round and moves
`last_tick_at` forward. Moving it only ever forward (guarded in SQL) keeps a slow or
outdated leader from rewinding what another already fired.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Row, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor.producer.scheduling.schedules import (
    NAME_PATTERN,
    Schedule,
    ScheduleDefinition,
    Source,
)
from conveyor.producer.store.schema import schedules
from conveyor.shared.errors import Conflict, SubmissionError

PUT_TRIES = 3


class ScheduleStore:
    """Reads and writes schedules through SQLAlchemy Core (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get(self, name: str) -> Schedule | None:
        async with self.engine.connect() as connection:
            query = select(schedules).where(schedules.c.name == name)
            row = (await connection.execute(query)).first()
        return None if row is None else _schedule(row)

    async def page(
        self, limit: int, cursor: str | None = None
    ) -> tuple[list[Schedule], str | None]:
        """Schedules by name after `cursor` (the last name of the previous page); the next
        cursor, or None on the last page; SubmissionError (field `cursor`) for a cursor
        that is no schedule name."""
        if cursor is not None and not re.fullmatch(NAME_PATTERN, cursor):
            raise SubmissionError("cursor: not a cursor this API gave out", field="cursor")
        query = select(schedules).order_by(schedules.c.name).limit(limit + 1)
        if cursor is not None:
            query = query.where(schedules.c.name > cursor)
        async with self.engine.connect() as connection:
            items = [_schedule(row) for row in await connection.execute(query)]
        more = len(items) > limit
        return items[:limit], items[limit - 1].name if more else None

    async def active(self) -> list[Schedule]:
        """Every schedule that is not paused: what the leader fires."""
        query = select(schedules).where(schedules.c.paused.is_(False)).order_by(schedules.c.name)
        async with self.engine.connect() as connection:
            return [_schedule(row) for row in await connection.execute(query)]

    async def put(
        self, name: str, definition: ScheduleDefinition, source: Source, now_s: float | None = None
    ) -> tuple[Schedule, bool]:
        """Create or replace schedule `name`; (the schedule, created).

        A replacement that changes the timing (cron or time zone) starts afresh: ticks up to
        now are not due under the new timing. Conflict when the API replaces a schedule of
        the schedules file (the file would undo it at the next start).
        """
        for _ in range(PUT_TRIES):
            now = time.time() if now_s is None else now_s
            current = await self.get(name)
            if current is None:
                row = _row(name, definition, source, now) | {
                    "paused": bool(definition.paused),
                    "last_tick_at": None,
                    "created_at": now,
                }
                try:
                    async with self.engine.begin() as connection:
                        await connection.execute(schedules.insert().values(**row))
                except IntegrityError:
                    continue  # created meanwhile by another request or replica: replace it
                return _schedule_of(row), True
            if current.source == "file" and source == "api":
                raise Conflict(
                    f"schedule {name!r} is defined in CONVEYOR_SCHEDULES_FILE: change it there "
                    "(pause and resume work through the API)"
                )
            if current.same_definition(definition) and current.source == source:
                return current, False
            values = _row(name, definition, source, now) | {
                "paused": current.paused if definition.paused is None else definition.paused,
                "last_tick_at": current.last_tick_at
                if current.same_timing(definition)
                else max(now, current.last_tick_at or now),
            }
            async with self.engine.begin() as connection:
                outcome = await connection.execute(
                    update(schedules).where(schedules.c.name == name).values(**values)
                )
            if outcome.rowcount:
                return current.model_copy(update=values), False
        raise RuntimeError(f"schedule {name!r} kept changing under this request; giving up")

    async def delete(self, name: str, source: Source = "api") -> bool:
        """Delete schedule `name`; False if there is none. Conflict for the API deleting a
        schedule of the schedules file."""
        current = await self.get(name)
        if current is None:
            return False
        if current.source == "file" and source == "api":
            raise Conflict(
                f"schedule {name!r} is defined in CONVEYOR_SCHEDULES_FILE: remove it there"
            )
        async with self.engine.begin() as connection:
            outcome = await connection.execute(delete(schedules).where(schedules.c.name == name))
        return bool(outcome.rowcount)

    async def set_paused(
        self, name: str, paused: bool, now_s: float | None = None
    ) -> Schedule | None:
        """Pause or resume `name`; the schedule, or None if there is none. Ticks that fell
        while it was paused are not fired on resume: it goes on from now."""
        now = time.time() if now_s is None else now_s
        values: dict[str, Any] = {"paused": paused, "updated_at": now}
        query = update(schedules).where(schedules.c.name == name, schedules.c.paused != paused)
        if not paused:
            current = await self.get(name)
            if current is not None:
                values["last_tick_at"] = max(now, current.last_tick_at or now)
        async with self.engine.begin() as connection:
            await connection.execute(query.values(**values))
        return await self.get(name)

    async def advance(self, name: str, tick_s: float) -> bool:
        """Record that the ticks of `name` up to `tick_s` were fired (or skipped); never
        moves backwards. False if nothing changed."""
        last = schedules.c.last_tick_at
        statement = (
            update(schedules)
            .where(schedules.c.name == name, last.is_(None) | (last < tick_s))
            .values(last_tick_at=tick_s)
        )
        async with self.engine.begin() as connection:
            return bool((await connection.execute(statement)).rowcount)

    async def sync_file(self, definitions: Mapping[str, ScheduleDefinition]) -> None:
        """Make the file-defined schedules those of the schedules file: create or replace
        each, and delete file-defined ones the file no longer has."""
        for name, definition in definitions.items():
            await self.put(name, definition, "file")
        gone = delete(schedules).where(
            schedules.c.source == "file", schedules.c.name.not_in(list(definitions))
        )
        async with self.engine.begin() as connection:
            await connection.execute(gone)


def _row(name: str, definition: ScheduleDefinition, source: Source, now: float) -> dict[str, Any]:
    return definition.model_dump(exclude={"paused"}) | {
        "name": name,
        "source": source,
        "updated_at": now,
    }


def _schedule_of(row: Mapping[str, Any]) -> Schedule:
    return Schedule.model_validate(dict(row))


def _schedule(row: Row[Any]) -> Schedule:
    return Schedule.model_validate(dict(row._mapping))
