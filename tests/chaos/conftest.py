"""Everything under tests/chaos stops or restarts its own RabbitMQ node, never the shared one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aio_pika.abc import AbstractConnection

from conveyor.shared.topology import Topology
from tests.chaos.ledger import EventLedger
from tests.chaos.producer_api import RunningProducer
from tests.chaos.summary import ChaosSummary
from tests.support import (
    RabbitNode,
    ServiceProcess,
    free_port,
    service_spawner,
    unique_namespace,
    wait_http,
)

SUMMARY = pytest.StashKey[ChaosSummary]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos" in str(item.path):
            item.add_marker(pytest.mark.chaos)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """The chaos scenarios' numbers: tasks, kills, restarts, duplicates, lost."""
    summary = config.stash.get(SUMMARY, None)
    if summary is None or not summary.rows:
        return
    terminalreporter.section("chaos summary")
    for line in summary.lines():
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def chaos_summary(pytestconfig: pytest.Config) -> ChaosSummary:
    """Scenarios add their row here; the table is printed at the end of the run."""
    return pytestconfig.stash.setdefault(SUMMARY, ChaosSummary())


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitNode]:
    """A private RabbitMQ node for this module (about 7 s to boot); destroyed at the end."""
    private = RabbitNode()
    try:
        private.start()
        yield private
    finally:
        private.destroy()


@pytest.fixture
def running_node(node: RabbitNode) -> RabbitNode:
    """The module's node, started again if an earlier test left it stopped."""
    if not node.is_running():
        node.start()
    return node


@pytest.fixture
def chaos_namespace() -> str:
    return unique_namespace("chaos")


@pytest.fixture
def start_service(
    running_node: RabbitNode, chaos_namespace: str, tmp_path: Path
) -> Iterator[Callable[..., ServiceProcess]]:
    """Start `python -m conveyor.consumer|producer` against the private node; killed after."""
    with service_spawner(running_node.url, chaos_namespace, tmp_path) as start:
        yield start


@pytest.fixture
async def node_connections(running_node: RabbitNode) -> AsyncIterator[list[AbstractConnection]]:
    """Connections a test opened to the node (it appends them); all closed after the test."""
    opened: list[AbstractConnection] = []
    yield opened
    for connection in opened:
        if not connection.is_closed:
            await connection.close()


OpenProducer = Callable[..., Awaitable[RunningProducer]]


@pytest.fixture
async def open_producer(
    start_service: Callable[..., ServiceProcess],
) -> AsyncIterator[OpenProducer]:
    """`await open_producer(**settings)`: a producer on a free port, ready, and its client."""
    clients: list[httpx.AsyncClient] = []

    async def start(**settings: Any) -> RunningProducer:
        port = free_port()
        process = start_service("producer", http_port=port, http_host="127.0.0.1", **settings)
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)
        clients.append(client)
        await wait_http(client, "/readyz", 60)
        return RunningProducer(client, process)

    yield start
    for client in clients:
        await client.aclose()


@pytest.fixture
async def ledger(running_node: RabbitNode, chaos_namespace: str) -> AsyncIterator[EventLedger]:
    """Every status event of the test's namespace, across broker restarts (reconnect it with
    `await ledger.connect()` after one); its queue is deleted after the test."""
    events = EventLedger(running_node.url, Topology(chaos_namespace))
    await events.connect()
    yield events
    await events.close(delete_queue=True)
