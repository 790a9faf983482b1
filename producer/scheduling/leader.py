"""Which producer replica runs the scheduler: elected through RabbitMQ, nothing else.

Every replica declares the exclusive queue `{ns}.scheduler-leader` on a connection of its
own. RabbitMQ lets exactly one connection hold an exclusive queue: that replica leads; the
others get RESOURCE_LOCKED and try again every third of CONVEYOR_LEADER_TIMEOUT_S. When the
leader dies (even SIGKILL) its TCP connection closes and the broker deletes the queue at
once; a leader cut off without a close is dropped by the broker's heartbeat check
(heartbeats every third of the timeout, so within two thirds of it). Either way the next try
of another replica takes over. The leader itself checks its hold with a round trip every
third of the timeout and steps down when that fails.

The connection is a plain one, not the services' robust connections: a robust connection
would re-declare the queue by itself after a reconnect, and a replica must never believe it
still leads across a reconnect. Losing the connection means stepping down; leading again
means winning the queue again. Should two replicas still both act as leader for a moment
(a leader cut off from the broker that has not noticed yet), the tasks they fire carry
deterministic ids and idempotency keys, so no tick is enqueued twice.

Which replica leads: the leader consumes its queue and answers each message with its
replica id (RPC over direct reply-to), so every replica can tell the API who leads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import socket
import uuid
from typing import Protocol

from aio_pika import Message
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
)
from aiormq.exceptions import ChannelLockedResource, PublishError

from conveyor.config import BrokerSettings
from conveyor.shared.connection import connect_plain
from conveyor.shared.topology import Topology

log = logging.getLogger(__name__)

REPLY_TO = "amq.rabbitmq.reply-to"
ASK_TIMEOUT_S = 1.0
CONNECT_TIMEOUT_S = 10.0


class LeaderStatus(Protocol):
    """What the scheduler and the API need to know about the election."""

    @property
    def replica_id(self) -> str: ...

    @property
    def leading(self) -> bool: ...

    async def wait_leading(self) -> None: ...

    async def leader(self) -> str | None: ...


def new_replica_id() -> str:
    """This process's name among the producer replicas: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leadership:
    """Campaigns for the scheduler leader queue until stopped; `leading` says whether this
    replica holds it right now."""

    def __init__(
        self, settings: BrokerSettings, topology: Topology, replica_id: str, timeout_s: float
    ) -> None:
        self._replica_id = replica_id
        self._settings = settings
        self._queue_name = topology.scheduler_leader_queue
        self._retry_every_s = timeout_s / 3
        self._heartbeat_s = max(1, int(timeout_s / 3))
        self._connection: AbstractConnection | None = None
        self._lead_channel: AbstractChannel | None = None
        self._ask_channel: AbstractChannel | None = None
        self._pending: dict[str, asyncio.Future[str]] = {}
        self._opening = asyncio.Lock()
        self._leading = asyncio.Event()
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def replica_id(self) -> str:
        return self._replica_id

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    async def wait_leading(self) -> None:
        """Return once this replica leads (at once if it does)."""
        await self._leading.wait()

    def start(self) -> None:
        self._task = asyncio.create_task(self._campaign_forever(), name="conveyor-leadership")

    async def stop(self) -> None:
        """Stop campaigning; a leader steps down (closing its connection frees the queue)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._disconnect()

    async def leader(self) -> str | None:
        """The replica id of the current leader; None while none leads (or none answers)."""
        if self.leading:
            return self.replica_id
        try:
            return await self._ask()
        except (PublishError, TimeoutError):
            return None  # no leader queue (unroutable), or its holder did not answer
        except Exception as error:
            log.info("could not ask who leads the scheduler: %r", error)
            return None

    async def _campaign_forever(self) -> None:
        while True:
            try:
                await self._campaign()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("scheduler leader election: %r; trying again", error)
                await self._disconnect()
            try:
                async with asyncio.timeout(self._retry_every_s):
                    await self._lost.wait()
            except TimeoutError:
                pass
            if self._lost.is_set():
                await self._disconnect()

    async def _campaign(self) -> None:
        """Try once to take the leader queue, unless this replica holds it already."""
        connection = await self._connect()
        if self.leading:
            await self._check_still_leading()
            return
        # Confirms on, and replies go out without `mandatory` (see _answer): an unconfirmed
        # channel logs every returned message as an ERROR.
        channel = await connection.channel(publisher_confirms=True)
        try:
            queue = await channel.declare_queue(self._queue_name, exclusive=True, auto_delete=True)
        except ChannelLockedResource:
            return  # another replica's connection holds it (the broker closed our channel)
        await queue.consume(self._answer, no_ack=True)
        channel.close_callbacks.add(functools.partial(self._on_closed, connection))
        self._lead_channel = channel
        self._leading.set()
        log.info("this replica (%s) now leads the scheduler", self.replica_id)

    async def _check_still_leading(self) -> None:
        """A round trip on the leader channel: a connection that died without a close (a
        cut network) fails it within one retry interval, long before heartbeats notice."""
        channel = self._lead_channel
        assert channel is not None
        async with asyncio.timeout(self._retry_every_s):
            await channel.declare_queue(self._queue_name, passive=True)

    async def _connect(self) -> AbstractConnection:
        if self._connection is not None and not self._connection.is_closed:
            return self._connection
        # Leading again means winning the queue again on the new connection.
        self._leading.clear()
        self._lost.clear()
        # Plain, not robust: a lost connection must end the leadership (see _on_closed).
        connection = await connect_plain(
            self._settings,
            f"conveyor producer (leader) {self.replica_id}",
            heartbeat_s=self._heartbeat_s,
            timeout_s=CONNECT_TIMEOUT_S,
        )
        connection.close_callbacks.add(functools.partial(self._on_closed, connection))
        self._connection = connection
        return connection

    def _on_closed(self, connection: AbstractConnection, *_: object) -> None:
        """The connection or the leader channel closed: this replica no longer leads (a
        closed leader channel on a live connection would keep the queue without answering,
        so the connection goes too)."""
        if connection is not self._connection:
            return  # an earlier connection, already given up
        if self.leading:
            log.warning("this replica (%s) lost the scheduler leadership", self.replica_id)
        self._leading.clear()
        self._lost.set()

    async def _disconnect(self) -> None:
        self._leading.clear()
        self._lost.clear()
        connection, self._connection = self._connection, None
        self._lead_channel = self._ask_channel = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(TimeoutError())
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except Exception as error:
                log.info("closing the leader election connection: %r", error)

    async def _answer(self, message: AbstractIncomingMessage) -> None:
        """Tell whoever asks that this replica leads."""
        channel = self._lead_channel
        if not message.reply_to or channel is None or not self.leading:
            return
        # Not mandatory: RabbitMQ counts a direct reply-to address as no queue and returns
        # every such reply, delivered or not; an asker that is gone times out anyway.
        await channel.default_exchange.publish(
            Message(self.replica_id.encode(), correlation_id=message.correlation_id),
            routing_key=message.reply_to,
            mandatory=False,
        )

    async def _ask(self) -> str:
        """One RPC to the leader queue's holder; PublishError if there is no such queue."""
        channel = await self._asking_channel()
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            async with asyncio.timeout(ASK_TIMEOUT_S):
                await channel.default_exchange.publish(
                    Message(b"", correlation_id=correlation_id, reply_to=REPLY_TO),
                    routing_key=self._queue_name,
                    mandatory=True,
                )
                return await future
        finally:
            self._pending.pop(correlation_id, None)

    async def _asking_channel(self) -> AbstractChannel:
        async with self._opening:  # concurrent requests share one channel
            if self._ask_channel is not None and not self._ask_channel.is_closed:
                return self._ask_channel
            if self._connection is None or self._connection.is_closed:
                raise TimeoutError("not connected")
            channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
            replies = await channel.declare_queue(REPLY_TO, passive=True)
            await replies.consume(self._on_reply, no_ack=True)
            self._ask_channel = channel
            return channel

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(message.body.decode(errors="replace"))
