"""A periodic look at the whole system for `/queues`, the dashboard and the gauges of
`/metrics`: work-queue depths and consumers from the broker, workers, the oldest queued
task and dead letters from the store.

One look every WATCH_EVERY_S on each replica, whatever the number of dashboards or scrapers:
reading queue depths means a broker round trip per queue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from pydantic import BaseModel

from conveyor.producer.dead_letters.store import DeadLetterStore
from conveyor.producer.monitoring.metrics import ProducerMetrics
from conveyor.producer.store.stats import Stats
from conveyor.producer.workers.store import WorkerStore
from conveyor.shared.background import BackgroundLoop
from conveyor.shared.topology import Topology
from conveyor.shared.workers import WorkerState

log = logging.getLogger(__name__)

WATCH_EVERY_S = 5.0
FORGET_WORKERS_AFTER_S = 86_400.0  # a worker silent this long leaves the registry
FORGET_EVERY_S = 60.0
STATES: Sequence[WorkerState] = ("online", "offline", "lost")


class QueueView(BaseModel):
    name: str  # as tasks name it (`default`)
    queue: str  # in RabbitMQ (`{ns}.default`)
    messages: int  # ready, not yet delivered
    consumers: int


class QueuePage(BaseModel):
    """Every work queue at once: the page shape of every list, `next_cursor` always null."""

    items: list[QueueView]
    next_cursor: None = None
    read_at: float  # epoch seconds of the look these numbers come from


class SystemWatch:
    """Looks every WATCH_EVERY_S; `queues` holds the latest look."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        topology: Topology,
        queues: Sequence[str],
        stats: Stats,
        letters: DeadLetterStore,
        workers: WorkerStore,
        metrics: ProducerMetrics,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._queues = sorted(queues)
        self._stats = stats
        self._letters = letters
        self._workers = workers
        self._metrics = metrics
        self._channel: AbstractChannel | None = None
        self._watching = BackgroundLoop(
            "conveyor-watch", self._look_or_reopen, every_s=WATCH_EVERY_S, logger=log
        )
        self._forgot_at = 0.0
        self.queues = QueuePage(items=[], read_at=0.0)

    def start(self) -> None:
        self._watching.start()

    async def stop(self) -> None:
        await self._watching.stop()

    async def look(self) -> None:
        """Read everything once and update the gauges."""
        await self._look_at_queues()
        await self._look_at_store()

    async def _look_at_queues(self) -> None:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel()
        # The plain channel underneath: a robust channel answers a passive declare of a queue
        # it declared before with that cached queue object, stale counts and all (aio-pika 10).
        channel = await self._channel.get_underlay_channel()
        items = []
        for name in self._queues:
            queue = self._topology.work_queue(name)
            declared = await channel.queue_declare(queue, passive=True)
            messages, consumers = declared.message_count or 0, declared.consumer_count or 0
            items.append(QueueView(name=name, queue=queue, messages=messages, consumers=consumers))
            self._metrics.queue_messages.labels(name).set(messages)
            self._metrics.queue_consumers.labels(name).set(consumers)
        self.queues = QueuePage(items=items, read_at=time.time())

    async def _look_at_store(self) -> None:
        now = time.time()
        oldest = await self._stats.oldest_queued_at()
        self._metrics.oldest_queued_seconds.set(max(0.0, now - oldest) if oldest else 0.0)
        self._metrics.dead_letters.set(await self._letters.count())
        if time.monotonic() - self._forgot_at >= FORGET_EVERY_S:
            self._forgot_at = time.monotonic()
            await self._workers.purge(now - FORGET_WORKERS_AFTER_S)
        by_state = await self._workers.count_by_state(now)
        for state in STATES:
            self._metrics.workers.labels(state).set(by_state[state])

    async def _look_or_reopen(self) -> None:
        """One look; after a failed one the next opens a fresh channel."""
        try:
            await self.look()
        except Exception:
            self._channel = None
            raise
