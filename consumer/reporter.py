"""What a consumer sends back to the broker: task status events and dead letters.

It uses its own connection: a memory or disk alarm blocks publishing connections, and the
consuming connection must keep draining while that lasts.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aio_pika import DeliveryMode, Message
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)

from shared.events import TaskEvent, encode_event
from shared.topology import Topology

log = logging.getLogger(__name__)

HEADER_REASON = "x-conveyor-reason"
HEADER_ERROR = "x-conveyor-error"
HEADER_DEAD_AT = "x-conveyor-dead-lettered-at"
HEADER_SOURCE_QUEUE = "x-conveyor-queue"


class Reporter:
    """Publishes events (fire-and-forget) and dead letters (confirmed) for a worker."""

    def __init__(
        self, connection: AbstractRobustConnection, topology: Topology, events: bool
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._events_enabled = events
        self._events_channel: AbstractChannel | None = None
        self._events: AbstractExchange | None = None
        self._dead: AbstractExchange | None = None

    async def start(self) -> None:
        """Open the channels and find the exchanges (declared by declare_topology)."""
        # Events go out without waiting for a confirm: they must not slow the task path.
        self._events_channel = await self._connection.channel(publisher_confirms=False)
        self._events = await self._events_channel.get_exchange(
            self._topology.events_exchange, ensure=False
        )
        dead_channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self._dead = await dead_channel.get_exchange(
            self._topology.dead_letter_exchange, ensure=False
        )

    async def report(self, event: TaskEvent) -> None:
        """Publish a status event; a broker hiccup is logged, never fails the task."""
        if not self._events_enabled or self._events is None:
            return
        try:
            await self._events.publish(
                encode_event(event), routing_key=event.routing_key, mandatory=False
            )
        except Exception as error:
            log.warning("could not publish %s event: %r", event.state.value, error)

    async def dead_letter(
        self, message: AbstractIncomingMessage, queue: str, reason: str, error: str
    ) -> bool:
        """Copy `message` to the dead-letter queue with why; True once the broker confirmed."""
        assert self._dead is not None, "Reporter.start() was not awaited"
        headers: dict[str, Any] = dict(message.headers or {})
        headers.update(
            {
                HEADER_REASON: reason,
                HEADER_ERROR: error[:2000],
                HEADER_DEAD_AT: time.time(),
                HEADER_SOURCE_QUEUE: queue,
            }
        )
        copy = Message(
            body=message.body,
            headers=headers,
            content_type=message.content_type,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            timestamp=message.timestamp,
        )
        try:
            await self._dead.publish(copy, routing_key=queue)
        except Exception as failure:
            log.warning("could not dead-letter message %s: %r", message.message_id, failure)
            return False
        return True
