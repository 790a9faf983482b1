"""AMQP connections with heartbeats, named so operators can tell them apart, over one broker
node or several.

`CONVEYOR_AMQP_URL` may list the nodes of a cluster. Each connection starts at its own node
(a per-process random offset plus a per-process connection count, so replicas and their
connections spread over the list instead of all landing on the first) and, when its node goes
away or a connection attempt fails, tries the next one in the list. Passwords never reach a
log line: ours go through `redact_url` or name a node by `host:port`, and aio-pika/aiormq
print URLs censored.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from aio_pika.connection import make_url
from aio_pika.robust_connection import RobustConnection
from yarl import URL

from conveyor.config import BrokerSettings, redact_url

log = logging.getLogger(__name__)

PLAIN_CONNECT_TIMEOUT_S = 10.0


class NodeRotation:
    """Where each new connection of this process starts in a list of `size` nodes.

    The offset is random per process (container replicas all have pid 1, so pids would not
    spread them); each further connection starts one node on.
    """

    def __init__(self, offset: int | None = None) -> None:
        self._offset = random.SystemRandom().randrange(1 << 16) if offset is None else offset
        self._count = itertools.count()

    def next_start(self, size: int) -> int:
        """The index in the node list at which the next connection starts."""
        return (self._offset + next(self._count)) % size


_ROTATION = NodeRotation()


def nodes_from(urls: Sequence[str], start: int) -> list[str]:
    """`urls` in the order a connection starting at `start` tries them (it wraps around)."""
    start %= len(urls)
    return [*urls[start:], *urls[:start]]


def host_port(url: str | URL) -> str:
    """`host:port` of a node URL: names a node in logs without its credentials."""
    parsed = URL(str(url))
    port = parsed.port or (5671 if parsed.scheme == "amqps" else 5672)
    return f"{parsed.host}:{port}"


class MultiNodeConnection(RobustConnection):
    """aio-pika's robust connection over several node URLs, tried in the order given.

    aio-pika 10 reconnects in `RobustConnection`'s connection factory by calling
    `Connection.connect`, which opens `self.url`; every failed attempt and every lost
    connection passes through `_on_connection_close` first (aio-pika's `UnderlayConnection`
    calls it for a failed connect too). Moving `self.url` to the next node there makes the
    next attempt, after `reconnect_interval`, go to the next node; channels, queues and
    consumers are then restored on it by aio-pika as after any reconnect.
    """

    def __init__(self, nodes: Sequence[URL], **kwargs: Any) -> None:
        if not nodes:
            raise ValueError("no broker node URL")
        self._nodes = list(nodes)
        self._node = 0
        super().__init__(self._nodes[0], **kwargs)

    @property
    def node(self) -> str:
        """`host:port` of the node this connection uses (or tries next)."""
        return host_port(self.url)

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        if not self._close_called and len(self._nodes) > 1:
            self._node = (self._node + 1) % len(self._nodes)
            self.url = self._nodes[self._node]
            log.info("broker node lost or unreachable; next try: %s", host_port(self.url))
        await super()._on_connection_close(closing)


def node_urls(settings: BrokerSettings, name: str, start: int) -> list[URL]:
    """The node URLs from `start` on, each with the connection's parameters in its query, as
    aio-pika's `connect_robust` puts them there (aiormq reads heartbeat and name from it)."""
    return [
        make_url(
            url,
            heartbeat=settings.heartbeat_s,
            reconnect_interval=settings.reconnect_interval_s,
            # Keep retrying the first connect as well: a service started before its broker
            # waits for it instead of exiting.
            fail_fast=False,
            client_properties={"connection_name": name},
        )
        for url in nodes_from(settings.amqp_urls(), start)
    ]


async def connect(settings: BrokerSettings, name: str) -> AbstractRobustConnection:
    """Connect to RabbitMQ, retrying until a node answers; reconnects on its own afterwards,
    moving to the next node of the list whenever its node goes away."""
    urls = settings.amqp_urls()
    start = _ROTATION.next_start(len(urls))
    nodes = node_urls(settings, name, start)
    others = f" (then {len(urls) - 1} more nodes)" if len(urls) > 1 else ""
    log.info("connecting to %s%s as %r", redact_url(nodes_from(urls, start)[0]), others, name)
    connection = MultiNodeConnection(nodes, client_properties={"connection_name": name})
    await connection.connect()
    log.info("connected to %s as %r", connection.node, name)
    connection.reconnect_callbacks.add(_log_reconnected(name))
    return connection


def _log_reconnected(name: str) -> Callable[..., None]:
    def reconnected(connection: AbstractConnection, *_: object) -> None:
        url = getattr(connection, "url", None)
        log.info("reconnected to %s as %r", host_port(url) if url else "?", name)

    return reconnected


async def connect_plain(
    settings: BrokerSettings,
    name: str,
    *,
    heartbeat_s: int | None = None,
    timeout_s: float = PLAIN_CONNECT_TIMEOUT_S,
) -> AbstractConnection:
    """A plain (not self-healing) connection to the first node that answers, trying the list
    from this process's next start; raises the last node's error if none does."""
    urls = settings.amqp_urls()
    last: BaseException | None = None
    for url in nodes_from(urls, _ROTATION.next_start(len(urls))):
        try:
            return await aio_pika.connect(
                url,
                heartbeat=heartbeat_s if heartbeat_s is not None else settings.heartbeat_s,
                timeout=timeout_s,
                client_properties={"connection_name": name},
            )
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as error:
            log.info("broker node %s did not answer: %r", host_port(url), type(error).__name__)
            last = error
    assert last is not None
    raise last
