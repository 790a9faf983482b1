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
from typing import Protocol

from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
)
from aiormq.exceptions import ChannelLockedResource, PublishError

from conveyor.config import BrokerSettings
from conveyor.shared.background import BackgroundLoop
from conveyor.shared.connection import connect_plain
from conveyor.shared.rpc import RpcClient, send_reply
from conveyor.shared.topology import Topology

log = logging.getLogger(__name__)

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
        self._asker: RpcClient | None = None
        self._opening = asyncio.Lock()
        self._leading = asyncio.Event()
        self._lost = False  # the connection or leader channel closed since the last try
        # A failed try disconnects and is tried again after the interval, whatever closes.
        self._campaigning = BackgroundLoop(
            "conveyor-leadership",
            self._campaign_round,
            every_s=self._retry_every_s,
            retry_s=self._retry_every_s,
            logger=log,
        )

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
        self._campaigning.start()

    async def stop(self) -> None:
        """Stop campaigning; a leader steps down (closing its connection frees the queue)."""
        await self._campaigning.stop()
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

    async def _campaign_round(self) -> None:
        """Give up a connection lost since the last try (woken by its close), then try."""
        if self._lost:
            await self._disconnect()
        try:
            await self._campaign()
        except Exception:
            await self._disconnect()
            raise

    async def _campaign(self) -> None:
        """Try once to take the leader queue, unless this replica holds it already."""
        connection = await self._connect()
        if self.leading:
            await self._check_still_leading()
            return
        # Confirms on, and replies go out without `mandatory` (see send_reply): an unconfirmed
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
        self._lost = False
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
        self._lost = True
        self._campaigning.wake()

    async def _disconnect(self) -> None:
        self._leading.clear()
        self._lost = False
        connection, self._connection = self._connection, None
        self._lead_channel = None
        asker, self._asker = self._asker, None
        if asker is not None:
            asker.abandon()
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except Exception as error:
                log.info("closing the leader election connection: %r", error)

    async def _answer(self, message: AbstractIncomingMessage) -> None:
        """Tell whoever asks that this replica leads."""
        channel = self._lead_channel
        if channel is None or not self.leading:
            return
        await send_reply(channel, message, self.replica_id.encode())

    async def _ask(self) -> str:
        """One RPC to the leader queue's holder; PublishError if there is no such queue."""
        asker = await self._asking_client()
        return await asker.call(self._queue_name, b"", _replica_id, timeout_s=ASK_TIMEOUT_S)

    async def _asking_client(self) -> RpcClient:
        async with self._opening:  # concurrent requests share one channel
            if self._asker is not None and not self._asker.channel.is_closed:
                return self._asker
            if self._connection is None or self._connection.is_closed:
                raise TimeoutError("not connected")
            channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
            self._asker = await RpcClient.open(channel)
            return self._asker


def _replica_id(body: bytes) -> str:
    """The leader's answer: its replica id."""
    return body.decode(errors="replace")
