"""The producer's moving parts, wired: task store, broker connections, recorder, upkeep."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

from aio_pika.abc import AbstractRobustConnection

from conveyor.config import ProducerSettings, redact_text, redact_url
from conveyor.producer.dead_letters.desk import DeadLetterDesk
from conveyor.producer.dead_letters.keeper import DeadLetterKeeper
from conveyor.producer.dead_letters.store import DeadLetterStore
from conveyor.producer.monitoring.metrics import ProducerMetrics
from conveyor.producer.monitoring.watch import SystemWatch
from conveyor.producer.runs.cancellation import Canceller
from conveyor.producer.runs.checks import RunChecks
from conveyor.producer.runs.recorder import Recorder
from conveyor.producer.runs.waiters import FinishedNotices, Waiters
from conveyor.producer.scheduling.delays import DueTasks
from conveyor.producer.scheduling.desk import ScheduleDesk
from conveyor.producer.scheduling.file import load_schedules_file
from conveyor.producer.scheduling.leader import Leadership, new_replica_id
from conveyor.producer.scheduling.scheduler import Scheduler
from conveyor.producer.scheduling.store import ScheduleStore
from conveyor.producer.store.database import TaskStore
from conveyor.producer.store.maintenance import Maintenance
from conveyor.producer.submission.outbox import PublishedMarks
from conveyor.producer.submission.publisher import Publisher
from conveyor.producer.submission.submitter import Submitter
from conveyor.producer.workers.registry import WorkerRegistry
from conveyor.producer.workers.store import WorkerStore
from conveyor.shared.catalog import Catalog
from conveyor.shared.connection import connect
from conveyor.shared.task_loader import load_catalog
from conveyor.shared.topology import Topology, declare_topology

log = logging.getLogger(__name__)

T = TypeVar("T")


class Stoppable(Protocol):
    """A background part of the service."""

    async def stop(self) -> None: ...


class ProducerService:
    """The producer's moving parts. `store` is None until the database is open, `submitter`
    until the broker answered too; the HTTP API answers 503 for what needs either."""

    def __init__(
        self, settings: ProducerSettings, catalog: Catalog | None = None, scheduling: bool = True
    ) -> None:
        self.settings = settings
        # The tasks of CONVEYOR_TASKS (TaskLoadError names what is wrong with them).
        self.catalog = catalog or load_catalog(settings)[1]
        self.topology = Topology.of(settings)
        self.waiters = Waiters()
        self.store: TaskStore | None = None
        self.submitter: Submitter | None = None
        self.recorder: Recorder | None = None
        self.dead_letters: DeadLetterDesk | None = None
        self.canceller: Canceller | None = None
        self.schedules: ScheduleDesk | None = None
        self.workers: WorkerStore | None = None
        self.watch: SystemWatch | None = None
        self.metrics = ProducerMetrics()
        self.replica_id = new_replica_id()
        # Off for in-process submitters: a bulk-load script should not lead the scheduler.
        self._scheduling = scheduling
        # Read before anything connects: a bad schedules file stops the producer (exit 2).
        self._file_schedules = (
            load_schedules_file(settings.schedules_file, self.catalog, settings.queues)
            if scheduling
            else None
        )
        self._connections: list[AbstractRobustConnection] = []
        self._parts: list[Stoppable] = []
        self._connecting: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Open the store and connect in the background; the API answers 503 until done."""
        self._connecting = asyncio.create_task(self._connect(), name="conveyor-producer-connect")

    async def wait_ready(self) -> Submitter:
        """Wait until connected and return the submitter."""
        if self._connecting is None:
            self.start()
        assert self._connecting is not None
        await asyncio.shield(self._connecting)
        assert self.submitter is not None
        return self.submitter

    async def _connect(self) -> None:
        where = redact_url(self.settings.database_url)
        self.store = await self._retrying(f"opening the task store {where}", self._open_store)
        await self._retrying("producer set-up", self._set_up)

    async def _retrying(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """Run `step` until it succeeds. An error (broker or database unreachable, a queue
        declared with other arguments...) is logged and retried, never left silent."""
        delay_s = self.settings.reconnect_interval_s
        while True:
            try:
                return await step()
            except Exception as error:
                log.error("%s failed, retrying in %.0fs: %s", what, delay_s, _describe(error))
                await self._close_connections()
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 30.0)

    async def _open_store(self) -> TaskStore:
        settings = self.settings
        store = await TaskStore.open(
            settings.database_url.get_secret_value(),
            settings.max_result_bytes,
            auto_migrate=settings.auto_migrate,
        )
        log.info("task store: %s", redact_url(settings.database_url))
        return store

    async def _set_up(self) -> None:
        settings, store = self.settings, self.store
        assert store is not None
        # Publishing and consuming on separate connections: an alarm blocks only publishers.
        publishing = await connect(settings, "conveyor producer (publish)")
        self._connections.append(publishing)
        consuming = await connect(settings, "conveyor producer (consume)")
        self._connections.append(consuming)
        channel = await consuming.channel()
        await declare_topology(
            channel, self.topology, sorted(set(settings.queues) | self.catalog.queues)
        )
        await channel.close()
        publisher = Publisher(
            publishing,
            self.topology,
            confirm_timeout_s=settings.publish_timeout_s,
            confirm_window=settings.confirm_window,
        )
        await publisher.start()
        notices = FinishedNotices(consuming, self.topology, store.records, self.waiters)
        await notices.start()
        self.recorder = Recorder(
            consuming, self.topology, store.events, notices.announce, self.metrics.applied
        )
        await self.recorder.start()
        checks = RunChecks(
            consuming,
            self.topology,
            store.records,
            store.cancellations,
            store.redeliveries,
            self.waiters,
        )
        await checks.start()
        letters = DeadLetterStore(store.engine)
        keeper = DeadLetterKeeper(consuming, self.topology, letters, store.records)
        await keeper.start()
        self.dead_letters = DeadLetterDesk(letters, store.records, publisher)
        maintenance = Maintenance(
            store.submissions,
            store.retention,
            publisher,
            resend_after_s=settings.outbox_resend_after_s,
            result_ttl_s=settings.result_ttl_s,
        )
        maintenance.start()
        canceller = Canceller(
            publishing, self.topology, store.records, store.cancellations, self.metrics.cancelled
        )
        await canceller.start()
        self.canceller = canceller
        due_tasks = DueTasks(store.delays, store.submissions, publisher)
        due_tasks.start()
        workers = WorkerStore(store.engine)
        registry = WorkerRegistry(consuming, self.topology, workers)
        await registry.start()
        self._parts = [
            notices,
            self.recorder,
            checks,
            keeper,
            registry,
            maintenance,
            due_tasks,
            publisher,
        ]
        self.workers = workers
        queues = sorted(set(settings.queues) | self.catalog.queues)
        watch = SystemWatch(
            consuming, self.topology, queues, store.stats, letters, workers, self.metrics
        )
        watch.start()
        self._parts.append(watch)
        self.watch = watch
        marks = PublishedMarks(store.submissions)
        marks.start()
        self._parts.append(marks)
        submitter = Submitter(
            self.catalog,
            publisher,
            settings.queues,
            store,
            settings.broker_consumer_timeout_s,
            marks,
            self.metrics,
        )
        if self._scheduling:
            await self._start_scheduling(store, submitter)
        self.submitter = submitter  # last: the API answers 503 (not ready) until here

    async def _start_scheduling(self, store: TaskStore, submitter: Submitter) -> None:
        """Load the schedules file, campaign for the scheduler leadership, fire when leading."""
        schedules = ScheduleStore(store.engine)
        if self._file_schedules is not None:
            await schedules.sync_file(self._file_schedules)
        leadership = Leadership(
            self.settings, self.topology, self.replica_id, self.settings.leader_timeout_s
        )
        scheduler = Scheduler(schedules, submitter, leadership)
        leadership.start()
        scheduler.start()
        self._parts += [scheduler, leadership]
        self.schedules = ScheduleDesk(schedules, submitter, leadership)

    async def _close_connections(self) -> None:
        for part in self._parts:
            await part.stop()
        self._parts = []
        for connection in self._connections:
            await connection.close()
        self._connections = []

    async def stop(self) -> None:
        """Stop connecting, stop the background work, close connections and the store."""
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        await self._close_connections()
        if self.store is not None:
            await self.store.close()


def _describe(error: Exception) -> str:
    """An error for the log without secrets: database errors can echo their URL."""
    return redact_text(repr(error))


@asynccontextmanager
async def open_submitter(settings: ProducerSettings) -> AsyncIterator[Submitter]:
    """Submit tasks from Python without the HTTP API (records included):

    async with open_submitter(ProducerSettings()) as submitter:
        await submitter.submit(TaskSubmission(task="echo", payload={"hi": 1}))
    """
    service = ProducerService(settings, scheduling=False)
    try:
        yield await service.wait_ready()
    finally:
        await service.stop()
