"""Calls made one task at a time: serial, or from many concurrent callers; their rate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Send = Callable[[int], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Rate:
    """Calls completed in a window (tasks/s) and the bench process's CPU per 1,000."""

    tasks: int
    seconds: float
    cpu_s: float

    @property
    def per_s(self) -> float:
        return self.tasks / self.seconds

    @property
    def cpu_s_per_1k(self) -> float:
        return self.cpu_s / self.tasks * 1000


async def serial(send: Send, tasks: int) -> Rate:
    """`tasks` calls, each awaited before the next."""
    cpu, t0 = time.process_time(), time.perf_counter()
    for i in range(tasks):
        await send(i)
    return Rate(tasks, time.perf_counter() - t0, time.process_time() - cpu)


async def in_flight(send: Send, tasks: int, callers: int) -> Rate:
    """`tasks` calls from `callers` concurrent callers, each calling in turn (one call per task)."""
    todo = iter(range(tasks))

    async def caller() -> None:
        for i in todo:
            await send(i)

    cpu, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return Rate(tasks, time.perf_counter() - t0, time.process_time() - cpu)


def pooled(rates: list[Rate]) -> Rate:
    return Rate(
        sum(r.tasks for r in rates), sum(r.seconds for r in rates), sum(r.cpu_s for r in rates)
    )
