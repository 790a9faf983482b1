"""Turning task submissions into records and published messages (a transactional outbox).

This is the in-process Python API of the producer: the HTTP API is a thin layer over it, and
Python code running beside the producer's store can use Submitter directly. Each submission
is recorded (queued, unpublished), then published with confirms, then marked published; a
publish that fails removes its record again, and a producer that dies in between leaves the
record to the outbox sweeper (producer/maintenance.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from producer.publisher import TaskPublisher
from producer.records import TaskRecord
from producer.store import NewTask, TaskStore
from shared.catalog import Catalog
from shared.envelope import TaskMessage
from shared.errors import SubmissionError
from shared.ids import new_task_id

log = logging.getLogger(__name__)

# Time a consumer needs after a task's time limit to kill it, report and ack.
SETTLE_MARGIN_S = 10.0


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


class Submitter:
    """Validates submissions against the catalog, records them and publishes them."""

    def __init__(
        self,
        catalog: Catalog,
        publisher: TaskPublisher,
        queues: Collection[str],
        store: TaskStore,
        broker_consumer_timeout_s: float | None = None,
    ) -> None:
        self.catalog = catalog
        self.broker_consumer_timeout_s = broker_consumer_timeout_s
        self.publisher = publisher
        self.queues = frozenset(queues) | catalog.queues
        self.store = store

    def prepare(
        self, submission: TaskSubmission, request_id: str | None = None, field_prefix: str = ""
    ) -> TaskMessage:
        """A TaskMessage for `submission`, or a SubmissionError naming the bad field."""
        try:
            spec = self.catalog.spec(submission.task)
            payload = self.catalog.validate_payload(submission.task, submission.payload)
        except SubmissionError as error:
            error.prefix_fields(field_prefix)
            raise
        queue = submission.queue or spec.queue
        if queue not in self.queues:
            raise SubmissionError(
                f"unknown queue {queue!r}; known queues: {', '.join(sorted(self.queues))}",
                field=f"{field_prefix}queue",
            )
        self._check_timeout(submission.timeout_s or spec.timeout_s, f"{field_prefix}timeout_s")
        return TaskMessage(
            id=new_task_id(),
            task=spec.name,
            queue=queue,
            payload=payload.model_dump(mode="json"),
            max_retries=submission.max_retries,
            timeout_s=submission.timeout_s,
            request_id=request_id,
        )

    def _check_timeout(self, timeout_s: float, field: str) -> None:
        """RabbitMQ closes the channel of a delivery unacked past its consumer_timeout (and
        redelivers it): a task allowed to run that long would never finish, only loop."""
        limit = self.broker_consumer_timeout_s
        if limit is not None and timeout_s > limit - SETTLE_MARGIN_S:
            raise SubmissionError(
                f"timeout_s {timeout_s:g} does not fit under the broker's consumer_timeout of "
                f"{limit:g}s (less {SETTLE_MARGIN_S:g}s to settle the task): lower timeout_s, "
                "or raise consumer_timeout on the broker and CONVEYOR_BROKER_CONSUMER_TIMEOUT_S",
                field=field,
                kind="too_long",
            )

    def _entry(self, submission: TaskSubmission, task: TaskMessage) -> NewTask:
        spec = self.catalog.spec(task.task)
        return NewTask(
            task,
            max_retries=spec.max_retries if task.max_retries is None else task.max_retries,
            timeout_s=spec.timeout_s if task.timeout_s is None else task.timeout_s,
            idempotency_key=submission.idempotency_key,
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
    ) -> list[tuple[TaskRecord, bool]]:
        """Validate all (all-or-nothing), record them, publish the new ones with pipelined
        confirms; (record, created) in the order submitted, created=False for a known
        idempotency key. Errors name fields with `field_prefix` (formatted with the index)."""
        entries = [
            self._entry(item, self.prepare(item, request_id, field_prefix.format(index)))
            for index, item in enumerate(submissions)
        ]
        outcome = await self.store.add(entries)
        fresh = [
            entry.message for entry, (_, created) in zip(entries, outcome, strict=True) if created
        ]
        if fresh:
            try:
                await self.publisher.publish_many(fresh)
            except BaseException:
                # Not accepted, so not recorded; shielded so a cancelled request still cleans up.
                await asyncio.shield(self._discard([task.id for task in fresh]))
                raise
            await self.store.mark_published([task.id for task in fresh])
        return outcome

    async def _discard(self, ids: list[str]) -> None:
        try:
            await self.store.discard(ids)
        except Exception as error:
            # Left in the outbox: the sweeper publishes them later (at least once).
            log.warning("could not remove %d unpublished record(s): %r", len(ids), error)
