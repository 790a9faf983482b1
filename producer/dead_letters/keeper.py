"""Draining the dead-letter queue into the dead-letter table, so people can list, requeue and
purge what landed there (dead_letters/desk.py).

Consumers (and the broker, for crash loops) dead-letter to `{ns}.dlx` -> `{ns}.dead`. Every
producer replica drains `{ns}.dead` into the dead-letter table, acking each message only once
it is committed.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from conveyor.producer.dead_letters.store import DeadLetter, DeadLetterStore
from conveyor.producer.store.records import Records
from conveyor.shared.background import InFlight
from conveyor.shared.topology import Topology
from conveyor.shared.wire import (
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


class DeadLetterKeeper:
    """Consumes `{ns}.dead` into the dead-letter table."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        topology: Topology,
        letters: DeadLetterStore,
        records: Records,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._letters = letters
        self._records = records
        self._channel: AbstractChannel | None = None
        self._keeping = InFlight()

    async def start(self) -> None:
        self._channel = channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=50)
        # declare (passive), not get_queue: a robust channel restores consumers only of
        # queues it declared, so after a reconnect this one would stop consuming.
        queue = await channel.declare_queue(self._topology.dead_letter_queue, passive=True)
        await queue.consume(self._keeping.track(self._keep))

    async def stop(self) -> None:
        """Stop consuming, then end the writes under way (their messages are requeued)."""
        await self._keeping.stop(self._channel)

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
        record = await self._records.get(task_id)
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


def _plain(value: Any) -> Any:
    """A header value as JSON can hold it."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
