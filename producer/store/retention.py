"""Retention: finished records are kept for CONVEYOR_RESULT_TTL_S, then deleted."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor.producer.store.schema import tasks
from conveyor.shared.records import TERMINAL_VALUES


class Retention:
    """Deletes finished records past their time (producer/store/maintenance.py runs it)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def purge(self, finished_before: float) -> int:
        """Delete terminal records that finished before `finished_before`; how many."""
        async with self._engine.begin() as connection:
            outcome = await connection.execute(
                delete(tasks).where(
                    tasks.c.status.in_(TERMINAL_VALUES), tasks.c.finished_at < finished_before
                )
            )
        return int(outcome.rowcount or 0)
