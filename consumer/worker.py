"""The consume loop: one channel per task slot, prefetch per slot, ack after the handler ran.

Each slot is its own channel with `basic_qos(prefetch)` consuming one queue, so RabbitMQ only
hands a slot a new task once it acked the last (prefetch=1): dispatch is fair, and a task
never waits behind a busy slot. If the process dies, its unacked tasks go back to the queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from conveyor.consumer.checks import RunCheck
from conveyor.consumer.deliveries import error_info, run_number_of, why
from conveyor.consumer.metrics import RunMeter, WorkerMetrics
from conveyor.consumer.reporter import Reporter
from conveyor.consumer.retries import Retrier
from conveyor.consumer.runs import Run, RunReports
from conveyor.consumer.settlement import DeadLetter, Ending, Report, Settlement
from conveyor.consumer.sync_runner import SyncRunner
from conveyor.shared.catalog import Catalog
from conveyor.shared.envelope import TaskMessage, decode
from conveyor.shared.errors import (
    InvalidPayload,
    InvalidResult,
    PermanentFailure,
    Retry,
    TaskTimedOut,
    UndecodableMessage,
    UnknownTask,
)
from conveyor.shared.logs import log_context
from conveyor.shared.records import TaskStatus
from conveyor.shared.tasks import Task, TaskContext
from conveyor.shared.topology import Topology, declare_work_queue
from conveyor.shared.wire import DeadLetterReason

log = logging.getLogger(__name__)

JSONValue = Any  # whatever orjson can serialize

DEFAULT_TIMEOUT_S = 300.0


@dataclass
class _Slot:
    queue: str
    channel: AbstractChannel
    amqp_queue: AbstractQueue
    consumer_tag: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Worker:
    """Consumes `queues` with `concurrency` slots each and runs the `tasks` they carry."""

    def __init__(
        self,
        *,
        worker_id: str,
        connection: AbstractRobustConnection,
        reporter: Reporter,
        catalog: Catalog,
        tasks: Mapping[str, Task],
        topology: Topology,
        queues: list[str],
        concurrency: int,
        prefetch: int,
        sync_runner: SyncRunner,
        retrier: Retrier | None = None,
        run_check: RunCheck | None = None,
        ack_after_report: bool = False,
        cancelled: Container[str] = frozenset(),
        report_running_after_s: float = 0.1,
        max_result_bytes: int = 1_048_576,
        metrics: WorkerMetrics | None = None,
        log_tasks: bool = True,
    ) -> None:
        self.worker_id = worker_id
        self.metrics = metrics or WorkerMetrics()
        self._connection = connection
        self._reporter = reporter
        self._catalog = catalog
        self._tasks = tasks
        self._topology = topology
        self._queues = queues
        self._concurrency = concurrency
        self._prefetch = prefetch
        self._sync_runner = sync_runner
        self._run_check = run_check
        self._retrier = retrier
        self._cancelled = cancelled
        self._current: dict[str, asyncio.Task[object]] = {}  # task id -> the run's asyncio task
        self._max_result_bytes = max_result_bytes
        self._runs = RunReports(
            reporter, worker_id, report_running_after_s, ack_after_report=ack_after_report
        )
        self._ends = Settlement(
            reporter=reporter,
            runs=self._runs,
            metrics=self.metrics,
            catalog=catalog,
            log_tasks=log_tasks,
        )
        self._slots: list[_Slot] = []
        self._running: set[asyncio.Task[object]] = set()
        self._stopping = False

    async def start(self) -> None:
        """Open the slots and start consuming."""
        for queue in self._queues:
            for _ in range(self._concurrency):
                channel = await self._connection.channel()
                await channel.set_qos(prefetch_count=self._prefetch)
                amqp_queue = await declare_work_queue(channel, self._topology, queue)
                slot = _Slot(queue, channel, amqp_queue)
                slot.consumer_tag = await amqp_queue.consume(partial(self._on_message, slot=slot))
                self._slots.append(slot)
        self._runs.start()
        log.info(
            "worker %s consuming %s with %d slot(s) each, prefetch=%d",
            self.worker_id,
            ", ".join(self._topology.work_queue(q) for q in self._queues),
            self._concurrency,
            self._prefetch,
        )

    async def stop(self, grace_s: float) -> None:
        """Take no new tasks; let running ones finish within `grace_s`, requeue the rest."""
        self._stopping = True
        for slot in self._slots:
            try:
                await slot.amqp_queue.cancel(slot.consumer_tag)
            except Exception as error:
                log.debug("cancelling consumer %s failed: %r", slot.consumer_tag, error)
        if self._running:
            log.info("waiting up to %.1fs for %d running task(s)", grace_s, len(self._running))
            _, late = await asyncio.wait(set(self._running), timeout=grace_s)
            for task in late:
                task.cancel()  # the task requeues its message on the way out
            if late:
                await asyncio.wait(late, timeout=5)
        for slot in self._slots:
            try:
                await slot.channel.close()
            except Exception as error:  # e.g. the connection is already gone
                log.debug("closing the channel of %s failed: %r", slot.queue, error)
        await self._runs.stop()
        self._sync_runner.close()
        await self._reporter.close()
        log.info("worker %s stopped: %s", self.worker_id, dict(self.stats))

    @property
    def stats(self) -> Counter[str]:
        """How many deliveries ended how (succeeded, retried, failed, rejected, ...)."""
        return self._ends.stats

    def status(self) -> tuple[list[str], int, int]:
        """(tasks running here now, runs ended, runs ended in an error): for the heartbeat."""
        stats = self.stats
        errors = stats["failed"] + stats["retried"]
        return list(self._current), stats["succeeded"] + stats["cancelled"] + errors, errors

    def stop_tasks(self, task_ids: Iterable[str]) -> None:
        """Stop the runs of `task_ids` here, if any (they were cancelled)."""
        for task_id in task_ids:
            running = self._current.get(task_id)
            if running is not None:
                log.info("stopping task %s: cancelled", task_id)
                running.cancel()

    async def _on_message(self, message: AbstractIncomingMessage, slot: _Slot) -> None:
        async with slot.lock:
            if self._stopping:
                await self._ends.end(message, Ending.REQUEUED, None)
                return
            current = asyncio.current_task()
            assert current is not None
            self._running.add(current)
            try:
                await self._process(message, slot.queue)
            finally:
                self._running.discard(current)

    async def _process(self, message: AbstractIncomingMessage, queue: str) -> None:
        try:
            task = decode(message, queue)
        except UndecodableMessage as error:
            await self._reject(message, queue, DeadLetterReason.UNDECODABLE, error.reason)
            return
        with log_context(
            task_id=task.id,
            task=task.task,
            attempt=task.attempt,
            worker=self.worker_id,
            request_id=task.request_id,
        ):
            if task.id in self._cancelled:
                await self._ends.end(
                    message, Ending.CANCELLED, "cancelled (before it ran)", task=task
                )
                return
            try:
                handler = self._lookup(task.task)
                payload = self._catalog.validate_payload(task.task, task.payload)
            except UnknownTask as error:
                await self._reject(
                    message, queue, DeadLetterReason.UNKNOWN_TASK, error.message, task=task
                )
                return
            except InvalidPayload as error:
                await self._reject(
                    message, queue, DeadLetterReason.INVALID_PAYLOAD, error.message, task=task
                )
                return
            await self._run(message, queue, task, handler, payload)

    def _lookup(self, name: str) -> Task:
        self._catalog.spec(name)  # raises UnknownTask for names outside the catalog
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTask(f"no handler for task {name!r} in this consumer", "task") from None

    async def _run(
        self,
        message: AbstractIncomingMessage,
        queue: str,
        task: TaskMessage,
        handler: Task,
        payload: object,
    ) -> None:
        ctx = TaskContext(task.id, task.task, task.attempt, self.worker_id, task.request_id)
        redelivered = bool(message.redelivered)
        if (redelivered or task.resent) and not await self._may_run(message, queue, task):
            return
        run_number = run_number_of(message, task)
        run = self._runs.start_run(task, redelivered, run_number)
        current = asyncio.current_task()
        assert current is not None
        self._current[task.id] = current
        meter = RunMeter(self.metrics, task, first_delivery=not redelivered)
        started = time.monotonic()
        try:
            result = self._checked(await self._call(handler, payload, task, ctx))
        except asyncio.CancelledError:
            meter.end("cancelled")
            if task.id in self._cancelled and not self._stopping:
                # Cancelled on request: stopped (a sync task's process killed), acked, the
                # slot goes on with the next task. The record already says cancelled.
                current.uncancel()
                line = "cancelled (stopped while running)"
                await self._ends.end(message, Ending.CANCELLED, line, task=task, run=run)
                return
            # Shutdown outran the grace period: give the task back, don't dead-letter it.
            line = "interrupted by shutdown; requeued"
            await self._ends.end(
                message, Ending.REQUEUED, line, task=task, level=logging.WARNING, run=run
            )
            raise
        except Exception as error:
            meter.end("failed")
            await self._fail(message, queue, task, run, run_number, error)
            return
        finally:
            self._current.pop(task.id, None)
        meter.end("succeeded")
        await self._ends.end(
            message,
            Ending.SUCCEEDED,
            f"succeeded in {time.monotonic() - started:.3f} s",
            task=task,
            run=run,
            report=Report(TaskStatus.SUCCEEDED, {"result": result}),
        )

    async def _fail(
        self,
        message: AbstractIncomingMessage,
        queue: str,
        task: TaskMessage,
        run: Run | None,
        run_number: int,
        error: Exception,
    ) -> None:
        """Schedule the next attempt if the task has retries left, else dead-letter it."""
        detail = f"{type(error).__name__}: {error}"
        if self._retries_left(task, error):
            requested = error.delay_s if isinstance(error, Retry) else None
            assert self._retrier is not None
            delay_s = self._retrier.delay_s(task.retries_used, requested)
            try:
                retry_at = await self._retrier.schedule(task, run_number, delay_s)
            except Exception as failure:
                # Could not schedule it: give the message back; this attempt runs again.
                line = f"{detail}; could not schedule a retry ({failure!r}); requeued"
                await self._ends.end(
                    message, Ending.REQUEUED, line, task=task, level=logging.WARNING, run=run
                )
                return
            # A Retry is a control signal, not a failure: INFO, not WARNING.
            level = logging.INFO if isinstance(error, Retry) else logging.WARNING
            await self._ends.end(
                message,
                Ending.RETRYING,
                f"retrying in {delay_s:.3g} s: {detail}",
                task=task,
                level=level,
                run=run,
                report=Report(
                    TaskStatus.RETRYING, {"error": error_info(error), "retry_at": retry_at}
                ),
            )
            return
        await self._ends.end(
            message,
            Ending.FAILED,
            f"failed: {detail}",
            task=task,
            level=logging.WARNING,
            run=run,
            report=Report(TaskStatus.FAILED, {"error": error_info(error)}),
            dead=DeadLetter(queue, DeadLetterReason.FAILED, detail),
        )

    def _retries_left(self, task: TaskMessage, error: Exception) -> bool:
        if self._retrier is None or isinstance(error, PermanentFailure):
            return False
        # The producer resolved it and the message carries it; only a message published by
        # other code may lack it: then this consumer's catalog answers.
        spec = self._catalog.get(task.task)
        max_retries = (
            task.max_retries
            if task.max_retries is not None
            else (spec.max_retries if spec is not None else 0)
        )
        return task.retries_used < max_retries

    async def _may_run(
        self, message: AbstractIncomingMessage, queue: str, task: TaskMessage
    ) -> bool:
        """A redelivered or re-sent task may have run: ask the producers (rare path). If it
        must not run, settle it here: ack a finished one, dead-letter a crash loop."""
        log.info("task %s was %s; checking it did not finish already", task.id, why(task))
        if self._run_check is None:
            return True
        verdict = await self._run_check.verdict(task.id, bool(message.redelivered))
        if verdict.run:
            return True
        if verdict.dead_letter:
            await self._reject(
                message,
                queue,
                DeadLetterReason.DELIVERY_LIMIT,
                f"delivered more than {self._topology.max_deliveries} times without finishing "
                "(it keeps crashing or stalling its consumer)",
                task=task,
            )
        else:
            line = f"skipped: already {verdict.finished_as}; acked without running it again"
            await self._ends.end(message, Ending.SKIPPED, line, task=task)
        return False

    def _checked(self, result: JSONValue) -> JSONValue:
        """`result` if the store can keep it: JSON, within CONVEYOR_MAX_RESULT_BYTES."""
        try:
            size = len(orjson.dumps(result))
        except TypeError as error:
            raise InvalidResult(f"the result is not JSON-serializable: {error}") from None
        if size > self._max_result_bytes:
            raise InvalidResult(
                f"the result is {size} bytes as JSON, over "
                f"CONVEYOR_MAX_RESULT_BYTES={self._max_result_bytes}"
            )
        return result

    def _limit_of(self, task: TaskMessage) -> float:
        """The time limit the message carries (as with max_retries, the catalog's only for a
        message published by other code)."""
        if task.timeout_s is not None:
            return task.timeout_s
        spec = self._catalog.get(task.task)
        return spec.timeout_s if spec is not None else DEFAULT_TIMEOUT_S

    async def _call(
        self, handler: Task, payload: object, task: TaskMessage, ctx: TaskContext
    ) -> JSONValue:
        """Run the task within its time limit: a sync one's child process is killed at
        the limit (it gets the payload as the message's JSON and validates it again), an
        async one is cancelled."""
        timeout_s = self._limit_of(task)
        if not handler.is_async:
            return await self._sync_runner.run(handler.run, task.payload, ctx, timeout_s)
        limit = asyncio.timeout(timeout_s)
        try:
            async with limit:
                return await handler.run(payload, ctx)  # type: ignore[arg-type]
        except TimeoutError:
            if limit.expired():
                raise TaskTimedOut(timeout_s, "it was cancelled") from None
            raise  # the handler's own TimeoutError

    async def _reject(
        self,
        message: AbstractIncomingMessage,
        queue: str,
        reason: DeadLetterReason,
        error: str,
        task: TaskMessage | None = None,
    ) -> None:
        """Dead-letter a delivery that cannot run, with `reason`."""
        await self._ends.end(
            message,
            Ending.DEAD_LETTERED,
            f"dead-lettered: {reason}: {error}",
            task=task,
            level=logging.WARNING,
            dead=DeadLetter(queue, reason, error),
        )
