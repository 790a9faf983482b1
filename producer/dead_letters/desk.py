"""Requeueing and purging dead letters: the API's side of the dead-letter table.

A requeue publishes the task again under its own id with the next attempt number and a fresh
retry budget; its record goes back to `queued` and keeps its history.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from aio_pika import Message

from conveyor.producer.dead_letters.store import DeadLetterStore
from conveyor.producer.store.records import Records
from conveyor.producer.submission.publisher import TaskPublisher
from conveyor.shared.envelope import decode
from conveyor.shared.errors import Conflict, TaskNotFound, UndecodableMessage
from conveyor.shared.wire import DEAD_LETTER_HEADERS

log = logging.getLogger(__name__)


class NotRequeueable(Conflict):
    """A dead letter that is no task (undecodable): it can only be purged."""


class DeadLetterDesk:
    """Requeues and purges dead letters (the API's side)."""

    def __init__(
        self, letters: DeadLetterStore, records: Records, publisher: TaskPublisher
    ) -> None:
        self.letters = letters
        self._records = records
        self._publisher = publisher

    async def requeue(self, task_id: str) -> None:
        """Publish the task again: same id, next attempt, a fresh retry budget."""
        letter = await self.letters.get(task_id)
        if letter is None:
            raise TaskNotFound(task_id)
        if letter.queue is None:
            raise NotRequeueable(f"dead letter {task_id!r} names no queue; purge it instead")
        headers = {k: v for k, v in letter.headers.items() if k not in DEAD_LETTER_HEADERS}
        original = Message(
            letter.body, headers=headers, message_id=task_id, content_type=letter.content_type
        )
        try:
            task = decode(original, letter.queue)
        except UndecodableMessage as error:
            raise NotRequeueable(
                f"dead letter {task_id!r} is not a task ({error.reason}); purge it instead"
            ) from None
        record = await self._records.get(task_id)
        if record is None:
            raise NotRequeueable(
                f"dead letter {task_id!r} has no task record (published around Conveyor, or "
                "purged after CONVEYOR_RESULT_TTL_S); purge it instead"
            )
        runs = max(record.attempts, task.runs_before)
        again = replace(
            task, attempt=task.attempt + 1, retry_base=task.attempt, runs_before=runs, resent=False
        )
        await self._publisher.publish(again)
        await self.letters.requeued(task_id)
        log.info("requeued task %s as attempt %d", task_id, again.attempt)

    async def requeue_all(self) -> tuple[int, int]:
        """Requeue every dead letter that is a task; (requeued, skipped)."""
        requeued = skipped = 0
        for task_id in await self.letters.task_ids():
            try:
                await self.requeue(task_id)
                requeued += 1
            except (NotRequeueable, TaskNotFound):
                skipped += 1
        return requeued, skipped
