"""Runs sync handlers in child processes, off the event loop.

CPU-bound handlers in a thread would still compete for the GIL with the loop that answers
broker heartbeats; child processes don't. Children start with `spawn` (forking a process
that runs an event loop and sockets is unsafe).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from consumer.handlers import JSONValue, SyncHandlerFn, TaskContext


class SyncRunner:
    """A pool of `size` child processes, created on first use and rebuilt if one dies."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pool: ProcessPoolExecutor | None = None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self._size, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    async def run(self, fn: SyncHandlerFn, payload: Any, ctx: TaskContext) -> JSONValue:
        """fn(payload, ctx) in a child process."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._ensure_pool(), fn, payload, ctx)
        except BrokenProcessPool:
            self.close()  # the next task gets a fresh pool
            raise

    def close(self) -> None:
        """Stop the children without waiting for running tasks."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
