"""Asks the producers whether a task that may have run before already finished.

Only redelivered or re-sent messages ask (the rare case): RPC over RabbitMQ with direct
reply-to, answered by whichever producer replica reads `{ns}.checks`. Consumers never open
the database. No answer in time means "run it": at least once beats never.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from aio_pika.abc import AbstractRobustConnection

from conveyor.shared.rpc import RpcClient
from conveyor.shared.topology import Topology
from conveyor.shared.wire import (
    CancelledSinceReply,
    CancelledSinceRequest,
    RunCheckReply,
    RunCheckRequest,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The producers' answer: run it, or why not."""

    run: bool = True
    finished_as: str | None = None  # the terminal status of a task that already ran
    dead_letter: bool = False  # redelivered more than CONVEYOR_MAX_DELIVERIES times


RUN = Verdict()


class RunCheck:
    """`await check.verdict(task_id, redelivered)`: whether a task that may have run before
    should run now."""

    def __init__(
        self, connection: AbstractRobustConnection, topology: Topology, timeout_s: float = 5.0
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._timeout_s = timeout_s
        self._rpc: RpcClient | None = None

    async def start(self) -> None:
        self._rpc = await RpcClient.open(await self._connection.channel(publisher_confirms=False))

    async def verdict(self, task_id: str, redelivered: bool) -> Verdict:
        """Ask the producers about `task_id` (twice: a request or its reply can be lost while
        a connection is being restored); RUN when none answers in time."""
        request = RunCheckRequest(task_id, redelivered).encode()
        try:
            try:
                reply = await self._ask(request, RunCheckReply.decode)
            except TimeoutError:
                log.info("no answer yet whether task %s already ran; asking again", task_id)
                reply = await self._ask(request, RunCheckReply.decode)
        except Exception as error:
            log.warning(
                "no producer answered whether task %s already ran (%r); running it", task_id, error
            )
            return RUN
        if reply.run:
            return RUN
        return Verdict(run=False, finished_as=reply.status, dead_letter=reply.dead_letter)

    async def cancelled_since(self, since: float) -> list[str]:
        """Ids of tasks cancelled since `since` (epoch seconds), as the producers know them."""
        request = CancelledSinceRequest(since).encode()
        return list((await self._ask(request, CancelledSinceReply.decode)).task_ids)

    async def _ask(self, request: bytes, decode: Callable[[bytes], T]) -> T:
        """One RPC to whichever producer reads `{ns}.checks`; TimeoutError if none answers."""
        assert self._rpc is not None, "RunCheck.start() was not awaited"
        return await self._rpc.call(
            self._topology.checks_queue,
            request,
            decode,
            timeout_s=self._timeout_s,
            expiration_s=self._timeout_s,
        )
