"""Turning task submissions into validated TaskMessages and publishing them.

This is the in-process Python API of the producer: the HTTP API is a thin layer over it, and
Python services that want to publish without HTTP use Submitter directly.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from producer.publisher import TaskPublisher
from shared.catalog import Catalog
from shared.envelope import TaskMessage
from shared.errors import SubmissionError
from shared.ids import new_task_id


class TaskSubmission(BaseModel):
    """What a client asks for: a task name, its payload and optional overrides."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=200, description="Task name from the catalog.")
    payload: dict[str, Any] = Field(default_factory=dict, description="The task's data.")
    queue: str | None = Field(default=None, description="Work queue; default: the task's own.")
    max_retries: int | None = Field(default=None, ge=0, le=100)
    timeout_s: float | None = Field(default=None, gt=0, le=86_400)


class Submitter:
    """Validates submissions against the catalog and publishes them with confirms."""

    def __init__(self, catalog: Catalog, publisher: TaskPublisher, queues: Collection[str]) -> None:
        self.catalog = catalog
        self.publisher = publisher
        self.queues = frozenset(queues) | catalog.queues

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
        return TaskMessage(
            id=new_task_id(),
            task=spec.name,
            queue=queue,
            payload=payload.model_dump(mode="json"),
            max_retries=submission.max_retries,
            timeout_s=submission.timeout_s,
            request_id=request_id,
        )

    async def submit(
        self, submission: TaskSubmission, request_id: str | None = None
    ) -> TaskMessage:
        """Validate and publish one task; returns it once the broker confirmed it."""
        task = self.prepare(submission, request_id)
        await self.publisher.publish(task)
        return task

    async def submit_many(
        self, submissions: Sequence[TaskSubmission], request_id: str | None = None
    ) -> list[TaskMessage]:
        """Validate all (all-or-nothing), then publish all with pipelined confirms."""
        tasks = [
            self.prepare(item, request_id, field_prefix=f"tasks.{index}.")
            for index, item in enumerate(submissions)
        ]
        await self.publisher.publish_many(tasks)
        return tasks
