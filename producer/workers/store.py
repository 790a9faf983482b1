"""The worker registry's table: the latest heartbeat of each consumer, and how to read it."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor.producer.store.schema import workers
from conveyor.shared.records import WorkerView
from conveyor.shared.workers import MISSED_HEARTBEATS_LOST, Heartbeat, WorkerState


class WorkerStore:
    """Keeps heartbeats; a worker silent for MISSED_HEARTBEATS_LOST intervals reads `lost`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def record(self, beat: Heartbeat) -> None:
        """Keep `beat` unless a newer one of the same worker is kept already (replicas may
        apply beats out of order) or the worker said goodbye (`offline` is final)."""
        row = beat.model_dump(exclude={"sent_at"}) | {"last_heartbeat_at": beat.sent_at}
        insert = pg_insert if self._engine.dialect.name == "postgresql" else sqlite_insert
        statement = insert(workers).values(row)
        statement = statement.on_conflict_do_update(
            index_elements=[workers.c.id],
            set_={name: statement.excluded[name] for name in row if name != "id"},
            where=(workers.c.state != "offline")
            & (workers.c.last_heartbeat_at <= statement.excluded.last_heartbeat_at),
        )
        async with self._engine.begin() as connection:
            await connection.execute(statement)

    async def list(self, now: float | None = None) -> list[WorkerView]:
        """Every worker known, online ones first, then by host and pid."""
        now = time.time() if now is None else now
        async with self._engine.connect() as connection:
            rows = (await connection.execute(select(workers))).all()
        views = [_view(row, now) for row in rows]
        order = {"online": 0, "lost": 1, "offline": 2}
        return sorted(views, key=lambda v: (order[v.state], v.hostname, v.pid, v.id))

    async def count_by_state(self, now: float | None = None) -> Counter[str]:
        return Counter(view.state for view in await self.list(now))

    async def purge(self, silent_since: float) -> int:
        """Forget workers silent since before `silent_since` (long offline or lost)."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                delete(workers).where(workers.c.last_heartbeat_at < silent_since)
            )
        return int(result.rowcount or 0)


def state_of(stored: str, last_heartbeat_at: float, heartbeat_s: float, now: float) -> WorkerState:
    if stored == "offline":
        return "offline"
    silent_s = now - last_heartbeat_at
    return "lost" if silent_s > MISSED_HEARTBEATS_LOST * heartbeat_s else "online"


def _view(row: Row[Sequence[object]], now: float) -> WorkerView:
    data = row._asdict()
    state = state_of(data["state"], data["last_heartbeat_at"], data["heartbeat_s"], now)
    return WorkerView(
        **{k: v for k, v in data.items() if k not in {"state", "heartbeat_s"}}
        | {
            "state": state,
            "started_at": datetime.fromtimestamp(data["started_at"], UTC),
            "last_heartbeat_at": datetime.fromtimestamp(data["last_heartbeat_at"], UTC),
            "heartbeat_age_s": round(max(0.0, now - data["last_heartbeat_at"]), 3),
            "at_risk": data["running"] if state == "lost" else [],
            "tasks": data["tasks"] or [],  # none kept by workers from before schema v6
        }
    )
