"""Answers consumers' "may I run this task?" for messages that may have run before.

A consumer asks only about a redelivered or re-sent message (the rare case), over RabbitMQ
RPC: the common path pays nothing, and consumers never open the database. A task whose
record is already terminal must not run again; one redelivered more than
CONVEYOR_MAX_DELIVERIES times must be dead-lettered (classic queues count no deliveries, so
this count is theirs; quorum queues' own limit acts first); anything else may run.

A redelivered task whose record is not terminal yet may have finished all the same: its
consumer lost its broker node between the run and the ack, and sends the events again once
it has reconnected. So the answer to a task's first redelivery waits up to
LATE_EVENTS_GRACE_S for the task to be announced finished before it says "run" (the consumer
asks for 5 s, then once more).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from conveyor.producer.runs.waiters import Waiters
from conveyor.producer.store.cancellations import Cancellations
from conveyor.producer.store.records import Records
from conveyor.producer.store.redeliveries import Redeliveries
from conveyor.shared.background import InFlight
from conveyor.shared.errors import UndecodableMessage
from conveyor.shared.rpc import send_reply
from conveyor.shared.topology import Topology, declare_checks_queue
from conveyor.shared.wire import (
    CancelledSinceReply,
    CancelledSinceRequest,
    RunCheckReply,
    decode_check_request,
)

log = logging.getLogger(__name__)

LATE_EVENTS_GRACE_S = 2.0


class RunChecks:
    """Consumes `{ns}.run-checks` and replies `{"task_id", "run", "status"}` to each request."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        topology: Topology,
        records: Records,
        cancellations: Cancellations,
        redeliveries: Redeliveries,
        waiters: Waiters,
        late_events_grace_s: float = LATE_EVENTS_GRACE_S,
    ) -> None:
        self._max_deliveries = topology.max_deliveries
        self._connection = connection
        self._topology = topology
        self._records = records
        self._cancelled = cancellations
        self._redeliveries = redeliveries
        self._waiters = waiters
        self._late_events_grace_s = late_events_grace_s
        self._channel: AbstractChannel | None = None
        self._answering = InFlight()

    async def start(self) -> None:
        self._channel = await self._connection.channel(publisher_confirms=False)
        await self._channel.set_qos(prefetch_count=100)
        # Declared (not just looked up): a robust channel restores only what it declared.
        queue = await declare_checks_queue(self._channel, self._topology)
        await queue.consume(self._answering.track(self._answer), no_ack=True)

    async def stop(self) -> None:
        """Stop consuming, then end the answers under way (one may wait out its grace)."""
        await self._answering.stop(self._channel)

    async def _answer(self, request: AbstractIncomingMessage) -> None:
        assert self._channel is not None
        if not request.reply_to:
            return
        try:
            asked = decode_check_request(request.body)
        except UndecodableMessage as error:
            log.warning("ignored a malformed run check (%s): %r", error.reason, request.body[:200])
            return
        try:
            if isinstance(asked, CancelledSinceRequest):
                reply = await self._cancellations(asked.since)
            else:
                reply = await self._verdict(asked.task_id, asked.redelivered)
        except Exception as error:
            # No answer: the consumer waits out its timeout and runs the task (at least once).
            log.warning("could not answer a run check: %r", error)
            return
        await send_reply(self._channel, request, reply)

    async def _cancellations(self, since: float) -> bytes:
        """Tasks cancelled lately: a consumer starting up acks them unrun if it meets them."""
        return CancelledSinceReply(tuple(await self._cancelled.cancelled_since(since))).encode()

    async def _verdict(self, task_id: str, redelivered: bool) -> bytes:
        redeliveries = await self._redeliveries.increment(task_id) if redelivered else 0
        with self._waiters.watch(task_id) as announced:  # watching before the first read
            record = await self._records.get(task_id)
            # Only a task's first redelivery waits: one that keeps coming back (its consumers
            # keep dying) must not spend its deliveries waiting for events that never come.
            if redeliveries == 1 and record is not None and not record.status.terminal:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(announced, self._late_events_grace_s)
                record = await self._records.get(task_id)
        status = None if record is None else record.status
        finished = status is not None and status.terminal
        dead_letter = not finished and redeliveries > self._max_deliveries
        return RunCheckReply(
            task_id=task_id,
            run=not finished and not dead_letter,
            status=status,
            dead_letter=dead_letter,
        ).encode()
