"""The worker registry's table on SQLite and PostgreSQL: states, ordering, goodbye, purge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from conveyor.config import async_database_url
from conveyor.producer.store.database import TaskStore
from conveyor.producer.workers.store import WorkerStore
from conveyor.shared.workers import Heartbeat

T0 = 1_800_000_000.0


def beat(sent_at: float, **changes: Any) -> Heartbeat:
    fields: dict[str, Any] = {
        "id": "host:1:abc",
        "hostname": "host",
        "pid": 1,
        "cpu_count": 4,
        "concurrency": 2,
        "queues": ["default"],
        "version": "0.1.0",
        "started_at": T0,
        "sent_at": sent_at,
        "heartbeat_s": 5.0,
        "state": "online",
        "running": [],
        "processed": 0,
        "failed": 0,
    }
    return Heartbeat.model_validate(fields | changes)


@pytest.fixture
async def workers(database_url: str) -> AsyncIterator[WorkerStore]:
    store = await TaskStore.open(async_database_url(database_url))
    yield WorkerStore(store.engine)
    await store.close()


async def test_a_worker_is_online_until_three_heartbeats_are_missed(workers: WorkerStore) -> None:
    await workers.record(beat(T0, running=["t-1"], processed=7, failed=1, address="10.0.3.7"))
    [online] = await workers.list(now=T0 + 14.9)
    assert (online.address, online.cpu_count, online.hostname) == ("10.0.3.7", 4, "host")
    assert (online.state, online.running, online.at_risk) == ("online", ["t-1"], [])
    assert (online.processed, online.failed, online.heartbeat_age_s) == (7, 1, 14.9)
    [lost] = await workers.list(now=T0 + 15.1)
    assert (lost.state, lost.at_risk) == ("lost", ["t-1"])
    assert (await workers.count_by_state(now=T0 + 15.1))["lost"] == 1


async def test_an_older_beat_applied_late_does_not_win(workers: WorkerStore) -> None:
    await workers.record(beat(T0 + 10, processed=5))
    await workers.record(beat(T0 + 5, processed=2))  # another replica, later
    [worker] = await workers.list(now=T0 + 11)
    assert worker.processed == 5 and worker.last_heartbeat_at.timestamp() == T0 + 10


async def test_offline_is_final_and_never_lost(workers: WorkerStore) -> None:
    await workers.record(beat(T0 + 10, state="offline", processed=9))
    await workers.record(beat(T0 + 20, state="online"))  # a beat that was still queued
    [worker] = await workers.list(now=T0 + 1_000)
    assert (worker.state, worker.processed) == ("offline", 9)


async def test_purge_forgets_only_workers_silent_since_before(workers: WorkerStore) -> None:
    await workers.record(beat(T0, id="old:1:a"))
    await workers.record(beat(T0 + 100, id="new:2:b"))
    assert await workers.purge(T0 + 50) == 1
    assert [w.id for w in await workers.list(now=T0 + 101)] == ["new:2:b"]
