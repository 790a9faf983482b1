"""Runs sync handlers in a pool of child processes, off the event loop.

CPU-bound handlers in a thread would still compete for the GIL with the loop that answers
broker heartbeats; child processes don't. Each child runs one task at a time, so the pool can
kill exactly the child of a task that overruns its time limit, grows past its memory limit or
is cancelled, and replace it; children are recycled after a number of tasks so leaks cannot
pile up. One child is consumer/child_process.py.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

from conveyor.consumer.child_process import ChildProcess, JSONValue, LogSetup, SyncHandlerFn
from conveyor.shared.tasks import TaskContext


class SyncRunner:
    """Up to `size` child processes, started on first use, reused, replaced when killed.

    Args:
        max_rss_mb: kill a child whose resident memory grows past this while it runs a task
            (CONVEYOR_MAX_CHILD_RSS_MB); None: no limit.
        max_tasks_per_child: retire a child after this many tasks
            (CONVEYOR_MAX_TASKS_PER_CHILD); None: children live until killed.
        rss_check_interval_s: how often a running child's memory is sampled.
        log_setup: (level, format) of the children's logging, like the consumer's own.
    """

    def __init__(
        self,
        size: int,
        *,
        max_rss_mb: float | None = None,
        max_tasks_per_child: int | None = None,
        rss_check_interval_s: float = 0.5,
        log_setup: LogSetup | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"a SyncRunner needs at least one child, not {size}")
        self._max_rss_mb = max_rss_mb
        self._max_tasks_per_child = max_tasks_per_child
        self._rss_check_interval_s = rss_check_interval_s
        self._log_setup = log_setup
        self._mp = multiprocessing.get_context("spawn")
        self._free = asyncio.Semaphore(size)
        self._idle: list[ChildProcess] = []
        self._children: set[ChildProcess] = set()  # idle, busy or retiring: close() stops all

    async def run(
        self, fn: SyncHandlerFn, payload: Any, ctx: TaskContext, timeout_s: float | None = None
    ) -> JSONValue:
        """fn(payload, ctx) in an idle child; waits for one while all `size` are busy.

        `timeout_s` counts from when the handler starts in the child.

        Raises:
            TaskTimedOut, ChildMemoryExceeded, ChildDied: the child was killed or died; a
                fresh one takes its place.
            Whatever fn raised (ChildTaskFailed when that does not survive pickling).
            asyncio.CancelledError: after the child running the task was killed.
        """
        async with self._free:
            child = self._take()
            try:
                return await child.call(fn, payload, ctx, timeout_s)
            finally:
                self._put_back(child)

    def close(self) -> None:
        """Kill every child, running tasks included, and reap them; the next run starts anew."""
        for child in self._children:
            child.close()
        self._children.clear()
        self._idle.clear()

    def _take(self) -> ChildProcess:
        self._children = {child for child in self._children if not child.closed}
        while self._idle:
            child = self._idle.pop()
            if child.alive:
                return child
            child.close()  # died while idle (e.g. the kernel's OOM killer)
        child = ChildProcess(
            self._mp, self._max_rss_mb, self._rss_check_interval_s, self._log_setup
        )
        self._children.add(child)
        return child

    def _put_back(self, child: ChildProcess) -> None:
        if not child.alive:
            child.close()
        elif self._max_tasks_per_child is not None and (
            child.tasks_done >= self._max_tasks_per_child
        ):
            child.retire()
        else:
            self._idle.append(child)
