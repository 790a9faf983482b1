"""StatusCounts: exact counts while counting is cheap, the latest count (refreshed in the
background at intervals) once counting takes long, as with millions of records."""

from __future__ import annotations

import asyncio

from conveyor.producer.store.status_counts import (
    MIN_REFRESH_S,
    REFRESH_FACTOR,
    WAIT_S,
    StatusCounts,
)


class FakeStore:
    """A count that takes `took_s` on the fake timer, and can be held on a gate."""

    def __init__(self) -> None:
        self.now_s = 1_000.0
        self.timer_s = 0.0
        self.took_s = 0.001
        self.queued = 0
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def count(self) -> dict[str, int]:
        self.calls += 1
        queued = self.queued  # read when the count starts, like a query's snapshot
        if self.gate is not None:
            await self.gate.wait()
        self.timer_s += self.took_s
        return {"queued": queued}

    def counts(self) -> StatusCounts:
        return StatusCounts(clock=lambda: self.now_s, timer=lambda: self.timer_s)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_cheap_counts_are_read_fresh_on_every_request() -> None:
    store = FakeStore()
    counts = store.counts()
    for queued in (1, 2, 3):
        store.queued = queued
        assert (await counts.read(store.count)).counts == {"queued": queued}
    assert store.calls == 3


async def test_an_expensive_count_is_reused_then_refreshed_in_the_background() -> None:
    store = FakeStore()
    store.took_s = 1.5
    counts = store.counts()
    store.queued = 1_000_000
    first = await counts.read(store.count)
    assert (first.counts, first.took_s, store.calls) == ({"queued": 1_000_000}, 1.5, 1)

    store.queued = 1_000_001
    store.now_s += REFRESH_FACTOR * 1.5 - 1  # not due yet: the same count, no query
    assert await counts.read(store.count) is first
    assert store.calls == 1

    store.now_s += 1  # due: answered at once from the latest, a new count starts
    assert max(MIN_REFRESH_S, REFRESH_FACTOR * 1.5) == store.now_s - first.at
    assert await counts.read(store.count) is first
    await _settle()
    assert store.calls == 2
    assert (await counts.read(store.count)).counts == {"queued": 1_000_001}
    assert store.calls == 2


async def test_a_cheap_count_that_stalls_answers_with_the_previous_one() -> None:
    store = FakeStore()
    counts = store.counts()
    store.queued = 5
    await counts.read(store.count)
    store.queued, store.gate = 6, asyncio.Event()
    async with asyncio.timeout(WAIT_S * 20):
        stale = await counts.read(store.count)  # gives up waiting after WAIT_S
    assert stale.counts == {"queued": 5}
    assert (await counts.read(store.count)) is stale  # no second count while one is slow
    assert store.calls == 2
    store.took_s = 2.0
    store.gate.set()
    await _settle()
    fresh = await counts.read(store.count)  # the stalled count landed; now it is expensive
    assert (fresh.counts, fresh.took_s, store.calls) == ({"queued": 6}, 2.0, 2)


async def test_close_ends_a_count_under_way_so_it_holds_no_connection_past_the_engine() -> None:
    store = FakeStore()
    counts = store.counts()
    await counts.read(store.count)
    store.gate = asyncio.Event()  # the next count stalls, like a query on a loaded database
    await counts.read(store.count)  # gives up waiting after WAIT_S; the count goes on alone
    running = [t for t in asyncio.all_tasks() if t.get_name() == "conveyor-status-counts"]
    assert len(running) == 1 and not running[0].done()
    await counts.close()
    assert running[0].cancelled()
    await counts.close()  # again: nothing left to end
