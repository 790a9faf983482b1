"""HTTP routes that show the system as a whole: workers, queues, task stats and Prometheus
metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from fastapi import APIRouter, Response

from conveyor.producer.monitoring.metrics import ProducerMetrics
from conveyor.producer.monitoring.watch import QueuePage, SystemWatch
from conveyor.producer.store.stats import Stats, TaskStats
from conveyor.producer.workers.store import WorkerStore
from conveyor.shared.errors import BrokerUnavailable, StoreUnavailable
from conveyor.shared.metrics import CONTENT_TYPE, exposition
from conveyor.shared.records import WorkerPage


class SystemParts(Protocol):
    """What these routes need from the producer service (None while not connected yet)."""

    @property
    def workers(self) -> WorkerStore | None: ...

    @property
    def watch(self) -> SystemWatch | None: ...

    @property
    def metrics(self) -> ProducerMetrics: ...


def system_routes(parts: SystemParts) -> APIRouter:
    router = APIRouter(tags=["system"])

    @router.get("/workers", response_model=WorkerPage)
    async def list_workers() -> WorkerPage:
        """Every consumer known to the registry: online, lost (3 heartbeats missed; its
        running tasks are at risk) or offline (it exited cleanly)."""
        if parts.workers is None:
            raise StoreUnavailable("the task store is not open yet")
        return WorkerPage(items=await parts.workers.list())

    @router.get("/queues", response_model=QueuePage)
    async def list_queues() -> QueuePage:
        """Each work queue's ready messages and consumers, as last read from RabbitMQ."""
        if parts.watch is None:
            raise BrokerUnavailable("not connected to RabbitMQ")
        if not parts.watch.queues.read_at:
            await parts.watch.look()
        return parts.watch.queues

    @router.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """This producer's metrics in Prometheus' text format."""
        return Response(exposition(parts.metrics.registry), media_type=CONTENT_TYPE)

    return router


def stats_routes(stats: Callable[[], Stats], clock: Callable[[], float] = time.time) -> APIRouter:
    """`GET /stats` over the producer's store (503 until it is open)."""
    router = APIRouter(tags=["records"])

    @router.get("/stats", response_model=TaskStats)
    async def get_stats() -> TaskStats:
        """Records per status, and tasks finished per 10 s over the last 10 minutes."""
        return await stats().read(clock())

    return router
