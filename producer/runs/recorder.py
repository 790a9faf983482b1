"""Applies consumers' status events to the task store, many per transaction.

Every producer replica consumes the one durable `{ns}.recorder` queue. Deliveries gather for
a few milliseconds (or until a batch is full), are applied in one transaction, and are acked
together only after the commit: a replica that dies mid-batch leaves its events to the
others. Applying an event twice is harmless (the store ignores anything not newer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from conveyor.producer.store.events import Events
from conveyor.shared.background import BackgroundLoop
from conveyor.shared.errors import UndecodableMessage
from conveyor.shared.events import TaskEvent, decode_events
from conveyor.shared.topology import Topology

log = logging.getLogger(__name__)

BATCH_EVENTS = 2_000
LINGER_S = 0.01
PREFETCH_MESSAGES = 500
RETRY_DELAY_S = 1.0

OnFinished = Callable[[set[str]], Awaitable[None]]


class Recorder:
    """Consumes `{ns}.recorder` and applies the events it carries to the records."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        topology: Topology,
        events: Events,
        on_finished: OnFinished,
        on_applied: Callable[[list[TaskEvent], float], None] | None = None,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._events = events
        self._on_finished = on_finished
        self._on_applied = on_applied
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        # Back to back: each round waits for its first delivery. The store's errors are
        # handled in _flush; anything else is logged and the next batch is tried after
        # RETRY_DELAY_S.
        self._flushing = BackgroundLoop(
            "conveyor-recorder",
            self._apply_next_batch,
            every_s=0,
            retry_s=RETRY_DELAY_S,
            logger=log,
        )
        self.applied = 0

    async def start(self) -> None:
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH_MESSAGES)
        # declare (passive), not get_queue: a robust channel restores consumers only of
        # queues it declared, so after a reconnect this one would stop consuming.
        queue = await channel.declare_queue(self._topology.recorder_queue, passive=True)
        await queue.consume(self._inbox.put)
        self._flushing.start()

    async def stop(self) -> None:
        await self._flushing.stop()

    async def _apply_next_batch(self) -> None:
        await self._flush(await self._next_batch())

    async def _next_batch(self) -> list[AbstractIncomingMessage]:
        """The first waiting delivery, plus whatever arrives within LINGER_S after it."""
        batch = [await self._inbox.get()]
        deadline = asyncio.get_running_loop().time() + LINGER_S
        while len(batch) < PREFETCH_MESSAGES:
            if self._inbox.empty():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        batch.append(await self._inbox.get())
                except TimeoutError:
                    break
            else:
                batch.append(self._inbox.get_nowait())
        return batch

    async def _flush(self, batch: list[AbstractIncomingMessage]) -> None:
        events: list[TaskEvent] = []
        for message in batch:
            try:
                events.extend(decode_events(message.body))
            except UndecodableMessage as error:
                log.warning("dropped events message %s: %s", message.message_id, error.reason)
        last = batch[-1]
        try:
            finished = set()
            for start in range(0, len(events), BATCH_EVENTS):
                finished |= await self._events.apply(events[start : start + BATCH_EVENTS])
        except Exception as error:
            # The database is down or refused: give the events back and try again later.
            log.error("could not apply %d events to the store: %r", len(events), error)
            await _settle(last.nack(multiple=True, requeue=True))
            await asyncio.sleep(RETRY_DELAY_S)
            return
        # Ack only after the commit: until then the events stay in RabbitMQ.
        await _settle(last.ack(multiple=True))
        self.applied += len(events)
        if self._on_applied is not None:
            self._on_applied(events, time.time())
        if finished:
            await self._on_finished(finished)


async def _settle(action: Awaitable[None]) -> None:
    """After a reconnect the old channel's tags are void; the broker redelivers those."""
    try:
        await action
    except Exception as error:
        log.info("could not settle events (%r); the broker will redeliver them", error)
