"""Retries through RabbitMQ itself: the next attempt waits in a delay queue, not in a consumer.

A failed attempt with retries left is published again (attempt + 1) to the retry queue of
its work queue for the delay, `{ns}.{queue}.retry.{ms}`: a queue-level TTL that
dead-letters back to the work queue. Nobody sleeps, nothing stays unacked while it waits,
and since every message in one retry queue waits the same time, none blocks another.
Delays grow exponentially with jitter, up to a cap, rounded to a few steps so that a
handful of queues serve them all.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace

from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from conveyor.shared.envelope import TaskMessage, encode
from conveyor.shared.topology import Topology, declare_retry_queue, retry_delay_ms

PUBLISH_TIMEOUT_S = 5.0


class Retrier:
    """Schedules the next attempt of a failed task; publishes on its own confirmed channel."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        topology: Topology,
        *,
        backoff_s: float,
        backoff_max_s: float,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._channel: AbstractChannel | None = None
        self._declared: set[str] = set()

    async def start(self) -> None:
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )

    def delay_s(self, retries_used: int, requested_s: float | None = None) -> float:
        """Backoff before the next attempt: base * 2^retries, capped, with "equal jitter"
        (half fixed, half random) so that tasks failing together do not retry together."""
        if requested_s is not None:
            return float(min(max(requested_s, 0.0), self._backoff_max_s))
        ceiling: float = min(self._backoff_max_s, self._backoff_s * 2.0**retries_used)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def schedule(self, task: TaskMessage, run: int, delay_s: float) -> float:
        """Publish the next attempt of `task` (confirmed); when it is due (epoch seconds)."""
        assert self._channel is not None, "Retrier.start() was not awaited"
        delay_ms = retry_delay_ms(delay_s)
        name = self._topology.retry_queue(task.queue, delay_ms)
        next_attempt = replace(
            task,
            attempt=task.attempt + 1,
            runs_before=run,
            resent=False,
            queued_at=time.time() + delay_ms / 1000,  # the retry queue holds it that long
        )
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                if name not in self._declared:
                    await declare_retry_queue(self._channel, self._topology, task.queue, delay_ms)
                    self._declared.add(name)
                await self._channel.default_exchange.publish(
                    encode(next_attempt), routing_key=name, mandatory=True
                )
        except BaseException:
            self._declared.discard(name)  # e.g. it expired while idle: declare it again
            raise
        return time.time() + delay_ms / 1000
