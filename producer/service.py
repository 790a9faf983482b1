"""The producer's broker side: connect (in the background), declare topology, publish."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aio_pika.abc import AbstractRobustConnection

from config import ProducerSettings
from producer.publisher import Publisher
from producer.submission import Submitter
from shared.builtin_tasks import builtin_catalog
from shared.catalog import Catalog
from shared.connection import connect
from shared.topology import Topology, declare_topology

log = logging.getLogger(__name__)


class ProducerService:
    """Holds the publishing connection; `submitter` is None until the broker answered once."""

    def __init__(self, settings: ProducerSettings, catalog: Catalog | None = None) -> None:
        self.settings = settings
        self.catalog = catalog or builtin_catalog(settings.test_tasks)
        self.topology = Topology(settings.namespace, settings.queue_type)
        self.submitter: Submitter | None = None
        self._connection: AbstractRobustConnection | None = None
        self._connecting: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start connecting in the background; the HTTP API answers 503 until it is done."""
        self._connecting = asyncio.create_task(self._connect(), name="conveyor-producer-connect")

    async def wait_ready(self) -> Submitter:
        """Wait until connected and return the submitter."""
        if self._connecting is None:
            self.start()
        assert self._connecting is not None
        await asyncio.shield(self._connecting)
        assert self.submitter is not None
        return self.submitter

    async def _connect(self) -> None:
        """Connect and set up; an error past connecting (e.g. a queue declared with other
        arguments) is logged and retried, so it never leaves the API silently answering 503."""
        delay_s = self.settings.reconnect_interval_s
        while True:
            try:
                await self._set_up()
                return
            except Exception as error:
                log.error("producer set-up failed, retrying in %.0fs: %r", delay_s, error)
                if self._connection is not None:
                    await self._connection.close()
                    self._connection = None
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 30.0)

    async def _set_up(self) -> None:
        settings = self.settings
        self._connection = await connect(settings, "conveyor producer")
        channel = await self._connection.channel()
        await declare_topology(
            channel, self.topology, sorted(set(settings.queues) | self.catalog.queues)
        )
        await channel.close()
        publisher = Publisher(
            self._connection,
            self.topology,
            confirm_timeout_s=settings.publish_timeout_s,
            confirm_window=settings.confirm_window,
        )
        await publisher.start()
        self.submitter = Submitter(self.catalog, publisher, settings.queues)

    async def stop(self) -> None:
        """Stop connecting, close the connection."""
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        if self._connection is not None:
            await self._connection.close()


@asynccontextmanager
async def open_submitter(settings: ProducerSettings) -> AsyncIterator[Submitter]:
    """Publish tasks from Python without the HTTP API:

    async with open_submitter(ProducerSettings()) as submitter:
        await submitter.submit(TaskSubmission(task="echo", payload={"hi": 1}))
    """
    service = ProducerService(settings)
    try:
        yield await service.wait_ready()
    finally:
        await service.stop()
