"""The cancellations a consumer honours: heard on `{ns}.control`, asked for at start.

A cancelled task may still sit in a work queue (or a retry queue) for a while, so ids are
kept for a day (at most MAX_KEPT of them). Hearing one for a task this consumer is running
stops it (`on_cancel`); meeting one later, the worker acks it without running it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from conveyor.consumer.checks import RunCheck
from conveyor.shared.errors import UndecodableMessage
from conveyor.shared.topology import Topology
from conveyor.shared.wire import CancelNotice

log = logging.getLogger(__name__)

KEEP_S = 86_400.0
MAX_KEPT = 100_000


class Cancellations:
    """`task_id in cancellations`: whether the task was cancelled (lately)."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        topology: Topology,
        run_check: RunCheck,
        on_cancel: Callable[[Iterable[str]], None],
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._run_check = run_check
        self._on_cancel = on_cancel
        self._ids: OrderedDict[str, float] = OrderedDict()  # id -> when heard

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._ids

    async def start(self) -> None:
        """Listen first, then ask for earlier ones: none falls between the two."""
        channel = await self._connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(self._topology.control_exchange)
        await queue.consume(self._on_notice, no_ack=True)
        try:
            self.add(await self._run_check.cancelled_since(time.time() - KEEP_S))
        except Exception as error:
            log.warning("could not learn earlier cancellations (%r); only new ones count", error)

    def add(self, ids: Iterable[str]) -> None:
        now = time.time()
        for task_id in ids:
            self._ids[task_id] = now
            self._ids.move_to_end(task_id)
        while self._ids and (
            len(self._ids) > MAX_KEPT or next(iter(self._ids.values())) < now - KEEP_S
        ):
            self._ids.popitem(last=False)

    async def _on_notice(self, message: AbstractIncomingMessage) -> None:
        try:
            cancelled = list(CancelNotice.decode(message.body).task_ids)
        except UndecodableMessage as error:
            log.warning(
                "ignored a malformed control message (%s): %r", error.reason, message.body[:200]
            )
            return
        self.add(cancelled)
        self._on_cancel(cancelled)
