"""Everything under tests/chaos stops or restarts its own RabbitMQ node, never the shared one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from aio_pika.abc import AbstractConnection

from tests.support import RabbitNode, ServiceProcess, service_spawner, unique_namespace


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos" in str(item.path):
            item.add_marker(pytest.mark.chaos)


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
    """Start `python -m consumer|producer` against the private node; all killed after the test."""
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
