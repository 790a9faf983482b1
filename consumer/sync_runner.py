"""Runs sync handlers in child processes, off the event loop.

CPU-bound handlers in a thread would still compete for the GIL with the loop that answers
broker heartbeats; child processes don't. Children start with `spawn` (forking a process
that runs an event loop and sockets is unsafe).
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from consumer.handlers import JSONValue, SyncHandlerFn, TaskContext


def _die_with_parent() -> None:
    """In a child: ask Linux to SIGKILL us when the consumer dies, even by SIGKILL.

    Without it, a child busy with a long task outlives a killed consumer and burns CPU.
    """
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


class SyncRunner:
    """A pool of `size` child processes, created on first use and rebuilt if one dies."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pool: ProcessPoolExecutor | None = None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self._size,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_die_with_parent,
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
