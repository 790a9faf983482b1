"""The dead-letter queue as something people can manage: drained into the store, listed,
requeued and purged.

Consumers (and the broker, for crash loops) dead-letter to `{ns}.dlx` -> `{ns}.dead`. Every
producer replica drains `{ns}.dead` into the dead-letter table, acking each message only once
it is committed. A requeue publishes the task again under its own id with the next attempt
number and a fresh retry budget; its record goes back to `queued` and keeps its history.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace
from typing import Any

from aio_pika import Message
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from conveyor.producer.dead_letter_store import DeadLetter, DeadLetterStore
from conveyor.producer.publisher import TaskPublisher
from conveyor.producer.store import TaskStore
from conveyor.shared.envelope import decode
from conveyor.shared.errors import Conflict, TaskNotFound, UndecodableMessage
from conveyor.shared.topology import Topology
from conveyor.shared.wire import (
    DEAD_LETTER_HEADERS,
    HEADER_ATTEMPT,
    HEADER_RUNS,
    HEADER_TASK,
    DeadLetterNote,
    DeadLetterReason,
    is_conveyor_header,
    lenient_int,
    lenient_text,
)

log = logging.getLogger(__name__)


class NotRequeueable(Conflict):
    """A dead letter that is no task (undecodable): it can only be purged."""


class DeadLetterKeeper:
    """Consumes `{ns}.dead` into the dead-letter table."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        topology: Topology,
        letters: DeadLetterStore,
        store: TaskStore,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._letters = letters
        self._store = store

    async def start(self) -> None:
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=50)
        # declare (passive), not get_queue: a robust channel restores consumers only of
        # queues it declared, so after a reconnect this one would stop consuming.
        queue = await channel.declare_queue(self._topology.dead_letter_queue, passive=True)
        await queue.consume(self._keep)

    async def _keep(self, message: AbstractIncomingMessage) -> None:
        try:
            letter = await self._letter_of(message)
            await self._letters.keep(letter)
        except Exception as error:
            # The database is down: leave it in the queue, try again shortly.
            log.error("could not keep dead letter %s: %r", message.message_id, error)
            await message.nack(requeue=True)
            return
        log.info("dead letter kept: task %s (%s)", letter.task_id, letter.reason)
        await message.ack()

    async def _letter_of(self, message: AbstractIncomingMessage) -> DeadLetter:
        headers = dict(message.headers or {})
        note = DeadLetterNote.decode(headers)
        reason, error, queue = note.reason, note.error, note.queue
        if reason == DeadLetterReason.DELIVERY_LIMIT and not error:
            error = (
                f"delivered more than {self._topology.max_deliveries} times without finishing "
                "(it keeps crashing or stalling its consumer)"
            )
        if queue and queue.startswith(f"{self._topology.namespace}."):
            queue = queue.removeprefix(f"{self._topology.namespace}.")
        task_id = message.message_id or f"unidentified-{uuid.uuid4()}"
        record = await self._store.get(task_id)
        attempts = max(record.attempts if record else 0, lenient_int(headers.get(HEADER_ATTEMPT)))
        if reason == DeadLetterReason.DELIVERY_LIMIT:
            # Every delivery started the task (prefetch 1): the first and max_deliveries more,
            # after the runs of its earlier retries. A task that crashes its consumer at once
            # reports none of these starts itself.
            starts = lenient_int(headers.get(HEADER_RUNS)) + self._topology.max_deliveries + 1
            attempts = max(attempts, starts)
        return DeadLetter(
            task_id=task_id,
            task=lenient_text(headers.get(HEADER_TASK)) or None,
            queue=queue,
            reason=reason,
            error=error,
            attempts=attempts,
            dead_lettered_at=time.time(),
            body=message.body,
            headers={k: _plain(v) for k, v in headers.items() if is_conveyor_header(k)},
            content_type=message.content_type,
        )


class DeadLetterDesk:
    """Requeues and purges dead letters (the API's side)."""

    def __init__(
        self, letters: DeadLetterStore, store: TaskStore, publisher: TaskPublisher
    ) -> None:
        self.letters = letters
        self._store = store
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
        record = await self._store.get(task_id)
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


def _plain(value: Any) -> Any:
    """A header value as JSON can hold it."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
