"""Records per status for `GET /stats`, counted again only as often as counting is cheap.

Counting by status reads every record: a few milliseconds for thousands, over a second for
two million (PostgreSQL, bench/backlog.py). While a count takes under CHEAP_COUNT_S, every
request counts (exact, as before), waiting at most WAIT_S for it when an earlier count can
answer instead. Past that, requests get the latest count at once, and a new count starts in
the background once that one is older than REFRESH_FACTOR times its own duration (at least
MIN_REFRESH_S): the dashboard stays fast and each replica spends at most about
1/REFRESH_FACTOR of one database connection counting, however large the backlog.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

CHEAP_COUNT_S = 0.05
WAIT_S = 0.1
REFRESH_FACTOR = 10.0
MIN_REFRESH_S = 2.0

Count = Callable[[], Awaitable[dict[str, int]]]


@dataclass(frozen=True, slots=True)
class Counted:
    """Counts by status as of `at` (epoch seconds), and how long counting them took."""

    counts: dict[str, int]
    at: float
    took_s: float


class StatusCounts:
    """The latest count, and when to count again (see the module docstring)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._clock = clock
        self._timer = timer
        self._latest: Counted | None = None
        self._running: set[asyncio.Task[Counted]] = set()
        # A count that outlasted WAIT_S: until it lands, requests start no other count.
        self._slow: asyncio.Task[Counted] | None = None

    async def read(self, count: Count) -> Counted:
        """The counts: fresh from `count` while counting is cheap, else the latest ones
        (starting a background count when they are due for one)."""
        latest = self._latest
        if latest is None:
            return await self._count(count)
        if self._slow is not None and not self._slow.done():
            return latest
        if latest.took_s >= CHEAP_COUNT_S:
            age_s = self._clock() - latest.at
            if age_s >= max(MIN_REFRESH_S, REFRESH_FACTOR * latest.took_s) and not self._running:
                self._start(count)
            return latest
        counting = self._start(count)
        done, _ = await asyncio.wait({counting}, timeout=WAIT_S)
        if done:
            return counting.result()
        # Slower than it used to be: this count goes on alone, and its duration switches
        # later requests to background counts.
        self._slow = counting
        return latest

    async def close(self) -> None:
        """Cancel the counts under way and wait until they ended, so none still holds a
        database connection when the engine is disposed."""
        running = list(self._running)
        for counting in running:
            counting.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    def _start(self, count: Count) -> asyncio.Task[Counted]:
        counting = asyncio.create_task(self._count(count), name="conveyor-status-counts")
        self._running.add(counting)
        counting.add_done_callback(self._finished)
        return counting

    def _finished(self, counting: asyncio.Task[Counted]) -> None:
        self._running.discard(counting)
        if not counting.cancelled() and (error := counting.exception()) is not None:
            log.warning("counting records by status failed (will try again): %r", error)

    async def _count(self, count: Count) -> Counted:
        at, started = self._clock(), self._timer()
        counts = await count()
        counted = Counted(counts, at, self._timer() - started)
        if self._latest is None or counted.at >= self._latest.at:
            self._latest = counted
        return counted
