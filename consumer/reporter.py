"""What a consumer sends back to the broker: task status events and dead letters.

It uses its own connection: a memory or disk alarm blocks publishing connections, and the
consuming connection must keep draining while that lasts. Events go out from a background
pump, in order, so reporting never sits between a finished task and its ack. The broker
confirms every events message; one that is not confirmed is sent again (after a reconnect
if need be) for as long as the process lives, so the store hears of every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

from aio_pika import DeliveryMode, Message
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from pamqp.commands import Basic

from conveyor.shared.background import BackgroundLoop
from conveyor.shared.events import EVENTS_ROUTING_KEY, TaskEvent, encode_events
from conveyor.shared.topology import Topology
from conveyor.shared.wire import DeadLetterNote, DeadLetterReason

log = logging.getLogger(__name__)

MAX_EVENTS_PER_MESSAGE = 500
# Under load events gather into one message for a while; the while adapts to the load. Each
# event of the last message adds LINGER_PER_EVENT_S, within [MIN, MAX]: below 200 events/s
# the linger shrinks to MIN (reporting adds ~2 ms to a task's latency), above it it grows to
# MAX, where a message carries dozens of events and the recorder's cost per event stays low
# (a fixed 5 ms caught barely more than one event per message at full drain; bench/).
MIN_LINGER_S = 0.002
MAX_LINGER_S = 0.025
LINGER_PER_EVENT_S = 0.005
PUBLISH_TIMEOUT_S = 5.0
RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 10.0


class Reporter:
    """Publishes status events (queued, then confirmed) and dead letters for a worker."""

    def __init__(
        self, connection: AbstractRobustConnection, topology: Topology, events: bool
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._events_enabled = events
        self._events_channel: AbstractRobustChannel | None = None
        self._batch_prefix = f"events-{secrets.token_hex(4)}-"
        self._batches = 0
        self._dead: AbstractExchange | None = None
        self._pending: asyncio.Queue[TaskEvent] = asyncio.Queue()
        self._emitted = 0  # events queued so far; the n-th is confirmed once _confirmed >= n
        self._confirmed = 0
        self._progress: asyncio.Future[None] | None = None
        self._last_publish = 0.0  # loop.time()
        self._linger_s = MIN_LINGER_S
        # Batch after batch, each waiting for its first event; a batch is sent until the
        # broker confirms it, so a step fails only on a bug (tried again after a pause).
        self._pump = BackgroundLoop(
            "conveyor-events",
            self._publish_next_batch,
            every_s=0,
            retry_s=RETRY_DELAY_S,
            logger=log,
        )

    async def start(self) -> None:
        """Open the channels, find the exchanges (declared by declare_topology), start the pump."""
        self._events_channel = await self._connection.channel(publisher_confirms=True)
        dead_channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._dead = await dead_channel.get_exchange(
            self._topology.dead_letter_exchange, ensure=False
        )
        if self._events_enabled:
            self._pump.start()

    @property
    def events_enabled(self) -> bool:
        """Whether status events are published; when not, callers can skip building them."""
        return self._events_enabled

    def emit(self, event: TaskEvent) -> int:
        """Queue a status event for publishing; returns at once, with the event's number
        for `wait_confirmed` (0 when events are off)."""
        if not self._events_enabled:
            return 0
        self._pending.put_nowait(event)
        self._emitted += 1
        return self._emitted

    async def wait_confirmed(self, number: int) -> None:
        """Wait until the broker confirmed the `number`-th event (and all before it)."""
        while self._confirmed < number:
            if self._progress is None:
                self._progress = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._progress)

    async def _publish_next_batch(self) -> None:
        """Publish the next batch of queued events, at most one message per linger (see
        MIN_LINGER_S).

        After a quiet spell the first event goes out at once (no added latency); under load
        events gather for a few milliseconds and share one message. Not while a run waits
        for its event's confirm (CONVEYOR_ACK_AFTER_REPORT): its slot holds its ack, and so
        its next task, until then; the events that arrive while one batch is confirmed make
        the next batch instead.
        """
        loop = asyncio.get_running_loop()
        batch = [await self._pending.get()]
        busy_for = self._last_publish + self._linger_s - loop.time()
        if busy_for > 0 and self._progress is None:
            await asyncio.sleep(busy_for)
        while not self._pending.empty() and len(batch) < MAX_EVENTS_PER_MESSAGE:
            batch.append(self._pending.get_nowait())
        await self._publish_until_confirmed(batch)
        self._last_publish = loop.time()
        self._linger_s = min(max(len(batch) * LINGER_PER_EVENT_S, MIN_LINGER_S), MAX_LINGER_S)
        self._confirmed += len(batch)
        if self._progress is not None:
            self._progress.set_result(None)
            self._progress = None
        for _ in batch:
            self._pending.task_done()

    async def _publish_until_confirmed(self, batch: list[TaskEvent]) -> None:
        """Tasks never wait for reporting, so reporting must not give up on their events."""
        delay_s = RETRY_DELAY_S
        while True:
            try:
                await self._publish_batch(batch)
                return
            except Exception as error:
                log.warning(
                    "status events not confirmed (%r); %d events wait to be sent again",
                    error,
                    len(batch) + self._pending.qsize(),
                )
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, MAX_RETRY_DELAY_S)

    async def _publish_batch(self, batch: list[TaskEvent]) -> None:
        """One events message, through aiormq directly: aio-pika's Message costs more than
        the rest of the publish, and events need none of its conveniences.

        Around a reconnect a publish can fail, or hang on the dead connection's writer:
        each try is bounded, and the caller tries again once the channel is restored.
        """
        assert self._events_channel is not None
        self._batches += 1
        body = encode_events(batch)
        properties = Basic.Properties(
            content_type="application/json",
            delivery_mode=2,  # persistent
            message_id=f"{self._batch_prefix}{self._batches}",
        )
        async with asyncio.timeout(PUBLISH_TIMEOUT_S):
            await self._events_channel.ready()  # restored after a reconnect
            channel = await self._events_channel.get_underlay_channel()
            confirmation = await channel.basic_publish(
                body,
                exchange=self._topology.events_exchange,
                routing_key=EVENTS_ROUTING_KEY,
                properties=properties,
            )
        if not isinstance(confirmation, Basic.Ack):
            # Nacked: the next try goes out on a new channel, since a channel can keep being
            # nacked after a quorum queue's leader moved (see producer/submission/publisher.py).
            await self._reopen_events_channel()
            raise ConnectionError(f"the broker did not ack the events: {confirmation!r}")

    async def _reopen_events_channel(self) -> None:
        """Replace the events channel (nothing else awaits a confirm on it: one batch at a time)."""
        old = self._events_channel
        self._events_channel = await self._connection.channel(publisher_confirms=True)
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()

    async def close(self, timeout_s: float = 5.0) -> None:
        """Publish the events still queued (within `timeout_s`), then stop the pump."""
        if not self._pump.running:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pending.join(), timeout_s)
        if self._pending.qsize():
            log.warning("%d status events not published at shutdown", self._pending.qsize())
        await self._pump.stop()

    async def dead_letter(
        self, message: AbstractIncomingMessage, queue: str, reason: DeadLetterReason, error: str
    ) -> bool:
        """Copy `message` to the dead-letter queue with why; True once the broker confirmed."""
        assert self._dead is not None, "Reporter.start() was not awaited"
        headers: dict[str, Any] = dict(message.headers or {})
        headers.update(DeadLetterNote(reason, error, queue, dead_at=time.time()).encode())
        copy = Message(
            body=message.body,
            headers=headers,
            content_type=message.content_type,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            timestamp=message.timestamp,
        )
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await self._dead.publish(copy, routing_key=queue)
        except Exception as failure:
            log.warning("could not dead-letter message %s: %r", message.message_id, failure)
            return False
        return True
