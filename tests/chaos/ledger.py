"""A ledger of every task status event of a namespace that survives broker restarts.

`tests.support.EventLog` reads an exclusive queue, which a broker restart deletes along with
the events in it. The ledger's queue is durable and acked only after the events were read, so
events published while the test reconnects wait for it; what a reconnect delivers twice (and
a batch a consumer re-sent) collapses, because an event is identified by what it says, not by
the message that carried it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from conveyor.shared.events import TaskEvent, decode_events
from conveyor.shared.records import TaskStatus
from conveyor.shared.topology import Topology
from tests.support import wait_until

_EventKey = tuple[str, TaskStatus, int, str, float | None]


class EventLedger:
    """Status events of `topology`'s namespace on the node at `url`, each once."""

    def __init__(self, url: str | list[str], topology: Topology, quorum: bool = False) -> None:
        # Several URLs (a cluster's nodes): each connect takes the first that answers. On a
        # cluster the queue is a quorum queue, so it outlives the loss of any one node.
        self._urls = [url] if isinstance(url, str) else list(url)
        self._arguments = {"x-queue-type": "quorum"} if quorum else None
        self._topology = topology
        self.queue_name = f"{topology.namespace}.test-ledger"
        self._connection: AbstractConnection | None = None
        self._seen: set[_EventKey] = set()
        self._terminal: set[str] = set()
        self.events: list[TaskEvent] = []

    async def connect(self, timeout_s: float = 60) -> None:
        """(Re)connect and read the ledger's queue; waits for a node that is still booting."""
        await self.close()
        deadline = time.monotonic() + timeout_s
        while self._connection is None:
            for url in self._urls:
                try:
                    self._connection = await aio_pika.connect(url, timeout=10)
                    break
                except (OSError, TimeoutError, aio_pika.exceptions.AMQPError):
                    if time.monotonic() > deadline:
                        raise
            else:
                await asyncio.sleep(0.5)  # no node is accepting connections yet
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=500)
        exchange = await channel.declare_exchange(
            self._topology.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            self.queue_name, durable=True, arguments=self._arguments
        )
        await queue.bind(exchange, routing_key="task.*")
        await queue.consume(self._on_message)

    async def close(self, delete_queue: bool = False) -> None:
        if self._connection is None:
            return
        connection, self._connection = self._connection, None
        if connection.is_closed:
            return
        try:
            if delete_queue:
                channel = await connection.channel()
                await channel.queue_delete(self.queue_name)
            await connection.close()
        except (aio_pika.exceptions.AMQPError, OSError, TimeoutError):
            pass  # the node restarted under it: nothing left to close

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        for event in decode_events(message.body):
            key = (event.task_id, event.state, event.run, event.worker, event.started_at)
            if key in self._seen:
                continue
            self._seen.add(key)
            self.events.append(event)
            if event.state.terminal:
                self._terminal.add(event.task_id)
        await message.ack()

    def runs_of(self, task_id: str) -> list[TaskEvent]:
        """The `running` events of `task_id`: one per start that lasted long enough."""
        return [e for e in self.events if e.task_id == task_id and e.state is TaskStatus.RUNNING]

    async def wait_running(self, task_id: str, timeout_s: float) -> TaskEvent:
        """The first `running` event of `task_id`, once it arrived."""
        await wait_until(lambda: bool(self.runs_of(task_id)), timeout_s, f"{task_id} to start")
        return self.runs_of(task_id)[0]

    def finished(self, ids: Iterable[str]) -> int:
        """How many of `ids` have a terminal (succeeded or failed) event."""
        return sum(1 for task_id in ids if task_id in self._terminal)

    def succeeded_runs(self) -> Counter[str]:
        """task id -> how many runs of it completed (ran to `succeeded`)."""
        return Counter(e.task_id for e in self.events if e.state is TaskStatus.SUCCEEDED)

    def ran_twice(self, ids: Iterable[str]) -> int:
        """How many of `ids` completed more than once (at-least-once delivery at work)."""
        runs = self.succeeded_runs()
        return sum(1 for task_id in ids if runs[task_id] > 1)
