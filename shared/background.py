"""Background loops: one task that runs a step again and again, from `start()` to `stop()`.

The services' background work (sweepers, pumps, heartbeats, the leader's campaign...) has
one shape: run a step, wait, repeat. A step's error is logged with the loop's name and the
loop goes on, because a background task that dies stops its work silently until the process
restarts. `stop()` cancels the task and waits until it has ended. Whatever an owner does on
the way out (a final flush, a goodbye) stays with the owner, after `await loop.stop()`.

InFlight is the same promise for consumer callbacks: what a service started, its stop ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a step returns: how many seconds to wait before the next step (None: `every_s`).
Step = Callable[[], Awaitable[float | None]]


class BackgroundLoop:
    """Runs `step` in a task named `name` until stopped.

    Between steps it waits `every_s` seconds, or as many as the step returned (0: none);
    with `every_s=None` it waits for `wake()`. `wake()` makes the next step start now: it
    ends the wait under way, or the next one if it comes during a step, so a wake-up is
    never lost; each step serves the wake-ups before it started. `wait_first` waits before
    the first step too. A step that raises is logged at WARNING on `logger` and the loop
    waits as usual, or `retry_s` exactly when given: a back-off that `wake()` does not cut
    short.
    """

    def __init__(
        self,
        name: str,
        step: Step,
        *,
        every_s: float | None,
        retry_s: float | None = None,
        wait_first: bool = False,
        logger: logging.Logger = log,
    ) -> None:
        self.name = name
        self._step = step
        self._every_s = every_s
        self._retry_s = retry_s
        self._wait_first = wait_first
        self._log = logger
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Started and not stopped."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop's task (nothing if it runs already)."""
        if not self.running:
            self._task = asyncio.create_task(self._run(), name=self.name)

    def wake(self) -> None:
        """End the current wait now (or the next one, when a step is running)."""
        self._woken.set()

    async def stop(self) -> None:
        """Cancel the task and wait until it ended (a running step is cancelled); safe to
        call again, or without `start()`."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        if self._wait_first:
            await self._wait(self._every_s)
        while True:
            self._woken.clear()  # wake-ups until now are served by this step
            try:
                wait_s = await self._step()
            except Exception as error:
                self._log.warning("%s failed, will try again: %r", self.name, error)
                if self._retry_s is not None:
                    await asyncio.sleep(self._retry_s)
                    continue
                wait_s = None
            await self._wait(self._every_s if wait_s is None else wait_s)

    async def _wait(self, wait_s: float | None) -> None:
        """Wait `wait_s` seconds (None: for ever) or until woken."""
        if wait_s is not None and wait_s <= 0:
            await asyncio.sleep(0)  # one loop turn: a step that never awaits cannot starve it
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self._woken.wait()


Handler = Callable[[T], Awaitable[None]]


class InFlight:
    """The calls of a consumer callback under way, so that its owner can end them on stop.

    aio-pika runs each delivery's callback in a task of its own, which closing the channel
    does not cancel: a handler still awaiting the database after its service closed the store
    would check out a connection of a disposed pool, which nobody ever closes. An owner wraps
    its callback with `track()` and, on stop, awaits `stop(channel)`: its channel closes (no new
    deliveries), then the calls under way end. An unacked delivery cut short goes back to its
    queue with the channel.
    """

    def __init__(self) -> None:
        self._calls: set[asyncio.Task[Any]] = set()

    def track(self, handler: Handler[T]) -> Handler[T]:
        """`handler`, with each call registered while it runs."""

        @functools.wraps(handler)
        async def tracked(delivery: T) -> None:
            call = asyncio.current_task()
            assert call is not None
            self._calls.add(call)
            try:
                await handler(delivery)
            finally:
                self._calls.discard(call)

        return tracked

    async def cancel(self) -> None:
        """Cancel the calls under way and wait until they ended."""
        calls = [call for call in self._calls if call is not asyncio.current_task()]
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)

    async def stop(self, channel: AbstractChannel | None) -> None:
        """Close `channel` (the one the callback consumes on), then `cancel()`."""
        if channel is not None:
            await channel.close()
        await self.cancel()
