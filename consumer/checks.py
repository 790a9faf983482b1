"""Asks the producers whether a task that may have run before already finished.

Only redelivered or re-sent messages ask (the rare case): RPC over RabbitMQ with direct
reply-to, answered by whichever producer replica reads `{ns}.run-checks`. Consumers never
open the database. No answer in time means "run it": at least once beats never. A question
that could not even be sent (the connection is being restored after its node died, which is
when redeliveries come) is sent again once it can be, within the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
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

ASKS = 2  # a request or its reply can be lost while a connection is being restored
RESEND_PAUSE_S = 0.25  # between tries to send a question the channel could not take


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
        """Ask the producers about `task_id`, for up to ASKS x the timeout; RUN when none
        answers in that time."""
        request = RunCheckRequest(task_id, redelivered).encode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ASKS * self._timeout_s
        while (left_s := deadline - loop.time()) > 0:
            try:
                reply = await self._ask(request, RunCheckReply.decode, min(self._timeout_s, left_s))
                break
            except TimeoutError:
                log.info("no answer yet whether task %s already ran", task_id)
            except Exception as error:  # e.g. the channel is closed until the reconnect
                log.info("could not ask whether task %s already ran yet (%r)", task_id, error)
            await asyncio.sleep(min(RESEND_PAUSE_S, max(0.0, deadline - loop.time())))
            await self._reopen()
        else:
            log.warning("no producer answered whether task %s already ran; running it", task_id)
            return RUN
        if reply.run:
            return RUN
        return Verdict(run=False, finished_as=reply.status, dead_letter=reply.dead_letter)

    async def _reopen(self) -> None:
        """Ask on a fresh channel from now on. A channel restored after a reconnect was seen
        to take questions and never hear a reply; calls still waiting on the old one fail
        (TimeoutError) and ask again. Keeps the old channel if no new one can be had."""
        try:
            fresh = await RpcClient.open(await self._connection.channel(publisher_confirms=False))
        except Exception as error:
            log.debug("no fresh channel for run checks yet: %r", error)
            return
        stale, self._rpc = self._rpc, fresh
        if stale is not None:
            stale.abandon()
            with contextlib.suppress(Exception):
                await stale.channel.close()

    async def cancelled_since(self, since: float) -> list[str]:
        """Ids of tasks cancelled since `since` (epoch seconds), as the producers know them."""
        request = CancelledSinceRequest(since).encode()
        reply = await self._ask(request, CancelledSinceReply.decode, self._timeout_s)
        return list(reply.task_ids)

    async def _ask(self, request: bytes, decode: Callable[[bytes], T], timeout_s: float) -> T:
        """One RPC to whichever producer reads `{ns}.run-checks`; TimeoutError if none
        answers in `timeout_s`."""
        assert self._rpc is not None, "RunCheck.start() was not awaited"
        return await self._rpc.call(
            self._topology.checks_queue,
            request,
            decode,
            timeout_s=timeout_s,
            expiration_s=timeout_s,
        )
