"""The one place a delivery ends: its status event, the broker's ack / requeue / reject (or
a dead-letter copy), its counts and metrics, and its log line, always in that order.

The event goes first: with CONVEYOR_ACK_AFTER_REPORT the ack waits for its confirm, so a
task is never acked before its record can learn the outcome.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from conveyor.consumer.deliveries import settle
from conveyor.consumer.metrics import WorkerMetrics
from conveyor.consumer.reporter import Reporter
from conveyor.consumer.runs import Run, RunReports
from conveyor.shared.catalog import Catalog
from conveyor.shared.envelope import TaskMessage
from conveyor.shared.records import TaskStatus
from conveyor.shared.wire import HEADER_TASK, DeadLetterReason

log = logging.getLogger("conveyor.consumer.worker")


class Ending(Enum):
    """How a delivery ended; the value is the worker's count it adds to."""

    SUCCEEDED = "succeeded"
    RETRYING = "retried"  # acked: the next attempt waits in a retry queue
    FAILED = "failed"  # for good: dead-lettered
    DEAD_LETTERED = "rejected"  # never ran: undecodable, unknown, invalid, delivery limit
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # it had finished already: acked unrun
    REQUEUED = "requeued"  # given back unfinished (shutdown, no retry could be scheduled)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Where a dead-lettered delivery came from and why it is dead."""

    queue: str
    reason: DeadLetterReason
    error: str


@dataclass(frozen=True, slots=True)
class Report:
    """The status event that ends a run."""

    state: TaskStatus
    details: dict[str, Any] = field(default_factory=dict)


class Settlement:
    """Ends deliveries for one worker (see the module docstring)."""

    def __init__(
        self,
        *,
        reporter: Reporter,
        runs: RunReports,
        metrics: WorkerMetrics,
        catalog: Catalog,
        log_tasks: bool,
    ) -> None:
        self.stats: Counter[str] = Counter()
        self._reporter = reporter
        self._runs = runs
        self._metrics = metrics
        self._catalog = catalog
        self._log_tasks = log_tasks

    async def end(
        self,
        message: AbstractIncomingMessage,
        ending: Ending,
        line: str | None,
        *,
        task: TaskMessage | None = None,
        level: int = logging.INFO,
        run: Run | None = None,
        report: Report | None = None,
        dead: DeadLetter | None = None,
    ) -> bool:
        """End `message` as `ending`: True if the broker was told.

        `line` is the task's log line ("succeeded in 0.012 s"), None for none; `run` stops
        being tracked, with `report` as its final event if given; `dead` dead-letters it
        (a copy carrying why, else a plain reject).
        """
        if report is not None:
            await self._runs.report_end(run, report.state, **report.details)
        else:
            self._runs.end_run(run, None)
        if dead is not None:
            copied = await self._reporter.dead_letter(message, dead.queue, dead.reason, dead.error)
            action = message.ack() if copied else message.reject(requeue=False)
        elif ending is Ending.REQUEUED:
            action = message.nack(requeue=True)
        else:
            # Ack only after the handler returned: if we crash mid-task, RabbitMQ redelivers.
            action = message.ack()
        sent = await settle(action, message)
        if sent or ending is not Ending.SUCCEEDED:  # an unacked success will run again
            self.stats[ending.value] += 1
            self._count(message, ending, task)
        if line is not None:
            self._tell(message, task, line, level)
        return sent

    def _count(
        self, message: AbstractIncomingMessage, ending: Ending, task: TaskMessage | None
    ) -> None:
        metrics = self._metrics
        if task is not None and ending is Ending.SUCCEEDED:
            metrics.succeeded.labels(task.task).inc()
        elif task is not None and ending is Ending.RETRYING:
            metrics.retried.labels(task.task).inc()
        elif task is not None and ending is Ending.FAILED:
            metrics.failed.labels(task.task).inc()
        if ending in (Ending.FAILED, Ending.DEAD_LETTERED):
            name = (message.headers or {}).get(HEADER_TASK)
            known = isinstance(name, str) and self._catalog.get(name) is not None
            metrics.dead_lettered.labels(name if known else "unknown").inc()

    def _tell(
        self, message: AbstractIncomingMessage, task: TaskMessage | None, line: str, level: int
    ) -> None:
        """The delivery's one line, Celery style, in the task's log_context (JSON lines
        carry its id, name, attempt, worker and request id). CONVEYOR_LOG_TASKS=false drops
        the INFO ones; warnings always go out."""
        if level <= logging.INFO and not self._log_tasks:
            return
        if task is None:
            log.log(level, "message %s %s", message.message_id, line)
        else:
            log.log(level, "task %s[%s] %s", task.task, task.id, line)
