"""Fixtures: the broker to test against, a unique namespace per test, service processes."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractRobustConnection

from conveyor.config import ProducerSettings
from conveyor.producer.service import open_submitter
from conveyor.producer.submission.submitter import Submitter
from conveyor.shared.catalog import DEFAULT_QUEUE
from conveyor.shared.topology import Topology, declare_topology
from tests.support import (
    EventLog,
    ServiceProcess,
    delete_namespace,
    service_spawner,
    unique_namespace,
)

LOCAL_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def _docker_answers() -> bool:
    """True when a Docker engine answers on its socket (`GET /_ping`)."""
    path = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(64)
    except OSError:
        return False


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """CONVEYOR_AMQP_URL if set; else a RabbitMQ container where Docker answers; else local."""
    if os.environ.get("CONVEYOR_AMQP_URL"):
        yield os.environ["CONVEYOR_AMQP_URL"]
    elif _docker_answers():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-management") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(container.port)
            yield f"amqp://guest:guest@{host}:{port}/"
    else:
        yield LOCAL_AMQP_URL


@pytest.fixture(scope="session")
async def broker(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    """A connection to the test broker. No broker: the tests fail (never skip)."""
    try:
        connection = await aio_pika.connect_robust(amqp_url, timeout=10)
    except Exception as error:
        pytest.fail(f"RabbitMQ is not reachable for the integration tests: {error!r}")
    yield connection
    await connection.close()


@pytest.fixture
async def namespace(
    broker: AbstractRobustConnection,
) -> AsyncIterator[str]:
    """A namespace of its own for this test; its queues and exchanges are deleted after."""
    name = unique_namespace()
    yield name
    await delete_namespace(broker, Topology(name), [DEFAULT_QUEUE])


@pytest.fixture
async def topology(broker: AbstractRobustConnection, namespace: str) -> Topology:
    """The test namespace's topology, declared."""
    topo = Topology(namespace)
    channel = await broker.channel()
    await declare_topology(channel, topo, [DEFAULT_QUEUE])
    await channel.close()
    return topo


@pytest.fixture
async def events(broker: AbstractRobustConnection, topology: Topology) -> AsyncIterator[EventLog]:
    """Every task status event of the test namespace, as it arrives."""
    log = EventLog()
    channel = await broker.channel()
    await log.start(channel, topology)
    yield log
    await channel.close()


POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database of this test's own, dropped after it."""
    admin_url = os.environ.get("CONVEYOR_TEST_POSTGRES_URL", POSTGRES_ADMIN_URL)
    name = f"conveyor_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(admin_url, timeout=10)
    except (OSError, asyncpg.PostgresError) as error:
        pytest.fail(f"PostgreSQL is not reachable for the store tests: {error!r}")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tasks.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """The task store's URL: each test using it runs on SQLite and on PostgreSQL."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def producer_settings(amqp_url: str, namespace: str, sqlite_url: str) -> ProducerSettings:
    return ProducerSettings(
        amqp_url=amqp_url, namespace=namespace, test_tasks=True, database_url=sqlite_url
    )


@pytest.fixture
async def submitter(producer_settings: ProducerSettings) -> AsyncIterator[Submitter]:
    """The in-process Python API of the producer, connected to the test namespace."""
    async with open_submitter(producer_settings) as current:
        yield current


@pytest.fixture
def spawn(amqp_url: str, namespace: str, tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start `python -m conveyor.consumer|producer` in the test namespace; killed after."""
    with service_spawner(amqp_url, namespace, tmp_path) as start:
        yield start
