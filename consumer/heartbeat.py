"""The consumer's side of the worker registry: announce, beat, say goodbye."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

from aio_pika import Message
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from conveyor.shared.background import BackgroundLoop
from conveyor.shared.topology import Topology
from conveyor.shared.workers import Heartbeat

log = logging.getLogger(__name__)

GOODBYE_TIMEOUT_S = 2.0


def conveyor_version() -> str:
    try:
        return version("conveyor")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def address_towards(host: str) -> str | None:
    """This machine's IP address on the route to `host` (the broker): the address others in
    the cluster know it by. A UDP "connect" picks the route and sends nothing."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))
            return str(probe.getsockname()[0])
    except OSError:
        return None


class HeartbeatSender:
    """Publishes this consumer's heartbeat every `interval_s`, and `offline` on `stop`.

    `status()` gives (running task ids, processed, failed) at the moment of each beat.
    Beats go out on the publishing connection without confirms: a lost beat is replaced by
    the next one, and a missed one is exactly what the registry should notice.
    """

    def __init__(
        self,
        connection: AbstractRobustConnection,
        topology: Topology,
        *,
        worker_id: str,
        concurrency: int,
        queues: list[str],
        tasks: list[str],
        interval_s: float,
        status: Callable[[], tuple[list[str], int, int]],
        broker_host: str = "localhost",
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._status = status
        self._interval_s = interval_s
        self._identity = {
            "id": worker_id,
            "hostname": socket.gethostname(),
            "address": address_towards(broker_host),
            "pid": os.getpid(),
            "cpu_count": os.cpu_count() or 1,
            "concurrency": concurrency,
            "queues": queues,
            "tasks": tasks,
            "version": conveyor_version(),
            "started_at": time.time(),
            "heartbeat_s": interval_s,
        }
        self._channel: AbstractChannel | None = None
        self._beating = BackgroundLoop(
            "conveyor-heartbeat", self._beat, every_s=interval_s, wait_first=True, logger=log
        )

    async def start(self) -> None:
        self._channel = await self._connection.channel(publisher_confirms=False)
        await self._send("online")
        self._beating.start()

    async def stop(self) -> None:
        """Stop beating and announce `offline` once (within a short bound: exit goes on);
        nothing if it never started."""
        if not self._beating.running:
            return
        await self._beating.stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                await self._send("offline")

    async def _beat(self) -> None:
        try:
            async with asyncio.timeout(self._interval_s):
                await self._send("online")
        except Exception as error:  # disconnected: the next beat tries again (no warning)
            log.debug("heartbeat not sent: %r", error)

    async def _send(self, state: str) -> None:
        assert self._channel is not None
        running, processed, failed = self._status()
        beat = Heartbeat.model_validate(
            {
                **self._identity,
                "sent_at": time.time(),
                "state": state,
                "running": running,
                "processed": processed,
                "failed": failed,
            }
        )
        await self._channel.default_exchange.publish(
            Message(beat.encode(), content_type="application/json"),
            routing_key=self._topology.workers_queue,
        )
