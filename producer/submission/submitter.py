"""Turning task submissions into records and published messages (a transactional outbox).

This is the in-process Python API of the producer: the HTTP API is a thin layer over it, and
Python code running beside the producer's store can use Submitter directly. Each submission
is recorded (queued, unpublished), then published with confirms, then marked published; a
publish that fails removes its record again, and a producer that dies in between leaves the
record to the outbox sweeper (producer/store/maintenance.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Sequence
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from conveyor.producer.monitoring.metrics import ProducerMetrics
from conveyor.producer.store.database import TaskStore
from conveyor.producer.store.submissions import NewTask
from conveyor.producer.submission.group_commit import GroupCommit
from conveyor.producer.submission.outbox import PublishedMarks
from conveyor.producer.submission.publisher import TaskPublisher
from conveyor.shared.catalog import Catalog
from conveyor.shared.envelope import TaskMessage
from conveyor.shared.errors import PublishUnconfirmed, SubmissionError
from conveyor.shared.ids import new_task_id
from conveyor.shared.records import TaskRecord

log = logging.getLogger(__name__)

# Time a consumer needs after a task's time limit to kill it, report and ack.
SETTLE_MARGIN_S = 10.0
MAX_DELAY_S = 365 * 86_400.0


class TaskSubmission(BaseModel):
    """What a client asks for: a task name, its payload and optional overrides."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=200, description="Task name from the catalog.")
    payload: dict[str, Any] = Field(default_factory=dict, description="The task's data.")
    queue: str | None = Field(default=None, description="Work queue; default: the task's own.")
    max_retries: int | None = Field(default=None, ge=0, le=100)
    timeout_s: float | None = Field(default=None, gt=0, le=86_400)
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Submitting the same key again returns the original task, not a new one.",
    )
    delay_s: float | None = Field(
        default=None, ge=0, le=MAX_DELAY_S, description="Run no earlier than this from now."
    )
    eta: AwareDatetime | None = Field(
        default=None, description="Run no earlier than this time (ISO 8601 with a timezone)."
    )

    @model_validator(mode="after")
    def _one_start_time(self) -> TaskSubmission:
        if self.delay_s is not None and self.eta is not None:
            raise ValueError("give delay_s or eta, not both")
        return self

    def due_at(self, now: float) -> float | None:
        """When the task is due (epoch seconds), if that is later than now."""
        if self.delay_s is not None:
            due = now + self.delay_s
        elif self.eta is not None:
            due = self.eta.timestamp()
        else:
            return None
        return due if due > now else None


def prepare_task(
    catalog: Catalog,
    queues: Collection[str],
    submission: TaskSubmission,
    *,
    broker_consumer_timeout_s: float | None = None,
    request_id: str | None = None,
    field_prefix: str = "",
    task_id: str | None = None,
) -> TaskMessage:
    """The message of a valid submission, its options resolved; else a SubmissionError
    naming the bad field. What the API, the Python API and conveyor.testing all check."""
    try:
        spec = catalog.spec(submission.task)
        payload = catalog.validate_payload(submission.task, submission.payload)
    except SubmissionError as error:
        error.prefix_fields(field_prefix)
        raise
    queue = submission.queue or spec.queue
    if queue not in queues:
        raise SubmissionError(
            f"unknown queue {queue!r}; known queues: {', '.join(sorted(queues))}",
            field=f"{field_prefix}queue",
        )
    # Options are resolved here, once: the message carries them, so every consumer runs
    # the task as submitted, whatever its own settings say.
    max_retries = spec.max_retries if submission.max_retries is None else submission.max_retries
    timeout_s = submission.timeout_s or spec.timeout_s
    _check_timeout(broker_consumer_timeout_s, timeout_s, f"{field_prefix}timeout_s")
    if submission.eta is not None and submission.eta.timestamp() > time.time() + MAX_DELAY_S:
        raise SubmissionError(
            f"eta is more than {MAX_DELAY_S / 86_400:g} days away", field=f"{field_prefix}eta"
        )
    return TaskMessage(
        id=task_id or new_task_id(),
        task=spec.name,
        queue=queue,
        payload=payload.model_dump(mode="json"),
        max_retries=max_retries,
        timeout_s=timeout_s,
        request_id=request_id,
    )


def _check_timeout(limit: float | None, timeout_s: float, field: str) -> None:
    """RabbitMQ closes the channel of a delivery unacked past its consumer_timeout (and
    redelivers it): a task allowed to run that long would never finish, only loop."""
    if limit is not None and timeout_s > limit - SETTLE_MARGIN_S:
        raise SubmissionError(
            f"timeout_s {timeout_s:g} does not fit under the broker's consumer_timeout of "
            f"{limit:g}s (less {SETTLE_MARGIN_S:g}s to settle the task): lower timeout_s, "
            "or raise consumer_timeout on the broker and CONVEYOR_BROKER_CONSUMER_TIMEOUT_S",
            field=field,
            kind="too_long",
        )


class Submitter:
    """Validates submissions against the catalog, records them and publishes them."""

    def __init__(
        self,
        catalog: Catalog,
        publisher: TaskPublisher,
        queues: Collection[str],
        store: TaskStore,
        broker_consumer_timeout_s: float | None = None,
        marks: PublishedMarks | None = None,
        metrics: ProducerMetrics | None = None,
    ) -> None:
        self.catalog = catalog
        self.broker_consumer_timeout_s = broker_consumer_timeout_s
        self.publisher = publisher
        self.queues = frozenset(queues) | catalog.queues
        self.store = store
        self._marks = marks
        self._metrics = metrics
        self._group = GroupCommit(self._record, self._publish_each)

    def prepare(
        self,
        submission: TaskSubmission,
        request_id: str | None = None,
        field_prefix: str = "",
        task_id: str | None = None,
    ) -> TaskMessage:
        """A TaskMessage for `submission`, or a SubmissionError naming the bad field."""
        return prepare_task(
            self.catalog,
            self.queues,
            submission,
            broker_consumer_timeout_s=self.broker_consumer_timeout_s,
            request_id=request_id,
            field_prefix=field_prefix,
            task_id=task_id,
        )

    def _entry(self, submission: TaskSubmission, task: TaskMessage) -> NewTask:
        assert task.max_retries is not None and task.timeout_s is not None  # prepare() set them
        return NewTask(
            task,
            max_retries=task.max_retries,
            timeout_s=task.timeout_s,
            idempotency_key=submission.idempotency_key,
            due_at=submission.due_at(task.created_at.timestamp()),
        )

    async def submit(self, submission: TaskSubmission, request_id: str | None = None) -> TaskRecord:
        """Validate, record and publish one task; its record once the broker confirmed it
        (the original task's record for an idempotency key seen before)."""
        [(record, _)] = await self.accept([submission], request_id, field_prefix="")
        return record

    async def submit_many(
        self, submissions: Sequence[TaskSubmission], request_id: str | None = None
    ) -> list[TaskRecord]:
        """Validate all (all-or-nothing), record and publish them; records in order."""
        return [record for record, _ in await self.accept(submissions, request_id)]

    async def accept(
        self,
        submissions: Sequence[TaskSubmission],
        request_id: str | None = None,
        field_prefix: str = "tasks.{}.",
        task_ids: Sequence[str] | None = None,
    ) -> list[tuple[TaskRecord, bool]]:
        """Validate all (all-or-nothing), record them, publish the new ones with pipelined
        confirms; (record, created) in the order submitted, created=False for a known
        idempotency key. Errors name fields with `field_prefix` (formatted with the index).
        Delayed tasks are recorded as `scheduled` and published when due
        (producer/scheduling/delays.py). `task_ids` gives the tasks ids of the caller's choosing
        (e.g. one per schedule tick)."""
        ids = list(task_ids) if task_ids is not None else [None] * len(submissions)
        entries = [
            self._entry(item, self.prepare(item, request_id, field_prefix.format(index), task_id))
            for index, (item, task_id) in enumerate(zip(submissions, ids, strict=True))
        ]
        if len(entries) == 1:
            # One task per call (POST /tasks, submit, a schedule's tick): concurrent calls
            # share a transaction and a confirm window (producer/submission/group_commit.py).
            return [await self._group.submit(entries[0])]
        outcome = await self._record(entries)
        fresh = [
            entry.message
            for entry, (_, created) in zip(entries, outcome, strict=True)
            if created and entry.due_at is None
        ]
        if fresh:
            await self._publish(fresh)
        return outcome

    async def _record(self, entries: Sequence[NewTask]) -> list[tuple[TaskRecord, bool]]:
        """Record `entries` in one transaction (see Submissions.add) and count the new ones."""
        outcome = await self.store.submissions.add(entries)
        if self._metrics is not None:
            for entry, (_, created) in zip(entries, outcome, strict=True):
                if created:
                    self._metrics.submitted.labels(entry.message.task).inc()
        return outcome

    async def _publish(self, fresh: list[TaskMessage]) -> None:
        """Publish a batch's recorded tasks (see `_publish_each`); raise if any failed: the
        first refusal, or one PublishUnconfirmed naming every task left to the outbox."""
        errors = [error for error in await self._publish_each(fresh) if error is not None]
        if not errors:
            return
        kept = [error.task_id for error in errors if isinstance(error, PublishUnconfirmed)]
        if kept:
            first = next(e for e in errors if isinstance(e, PublishUnconfirmed))
            raise PublishUnconfirmed(kept[0], first.reason, task_ids=kept)
        raise errors[0]

    async def _publish_each(self, fresh: list[TaskMessage]) -> list[Exception | None]:
        """Publish recorded tasks; keep the records of those the broker has or may have;
        per task, None once confirmed or why not.

        A task the broker refused (nacked, unroutable, never sent) loses its record: the client
        is told it was not accepted. One sent but not confirmed keeps its record for the
        outbox sweeper (the client gets 503 naming it): were it dropped, the message could
        still reach the queue, e.g. once a memory alarm clears, and run with no record.
        A request cancelled mid-publish leaves all of its tasks to the sweeper.
        """
        started = time.perf_counter()
        outcomes = await self.publisher.publish_all(fresh)
        if self._metrics is not None:
            self._metrics.publish_seconds.observe(time.perf_counter() - started)
        confirmed = [task.id for task, error in zip(fresh, outcomes, strict=True) if error is None]
        if confirmed:
            if self._marks is not None:
                self._marks.mark(confirmed)
            else:
                await self.store.submissions.mark_published(confirmed)
        refused = [
            task.id
            for task, error in zip(fresh, outcomes, strict=True)
            if error is not None and not isinstance(error, PublishUnconfirmed)
        ]
        if refused:
            # Shielded: a cancelled request still cleans up.
            await asyncio.shield(self._discard(refused))
        return outcomes

    async def _discard(self, ids: list[str]) -> None:
        try:
            await self.store.submissions.discard(ids)
        except Exception as error:
            # Left in the outbox: the sweeper publishes them later (at least once).
            log.warning("could not remove %d unpublished record(s): %r", len(ids), error)
