"""A property-based fuzz of the HTTP API from its own OpenAPI document (schemathesis),
against a real producer process on a real broker: no 5xx, and every response is one the
document declares (status code, content type, body schema).

Bounded for CI: a few examples per operation (CONVEYOR_FUZZ_EXAMPLES, default 15).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conveyor.producer.http.app import create_app
from conveyor.shared.topology import Topology
from tests.support import delete_namespace, free_port, service_spawner, unique_namespace


class _NoBackend:
    """Enough of a backend to build the app for its OpenAPI document (no request is served)."""

    store = submitter = dead_letters = schedules = canceller = workers = watch = None
    waiters = metrics = None


SCHEMA = schemathesis.openapi.from_dict(create_app(_NoBackend()).openapi())  # type: ignore[arg-type]
EXAMPLES = int(os.environ.get("CONVEYOR_FUZZ_EXAMPLES", "15"))
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def producer_url(amqp_url: str) -> Iterator[str]:
    """One producer process for every fuzzed operation, in a namespace of its own."""
    namespace = unique_namespace("fuzz")
    log_dir = Path(tempfile.mkdtemp(prefix="conveyor-fuzz-"))
    port = free_port()
    with service_spawner(amqp_url, namespace, log_dir) as spawn:
        producer = spawn("producer", http_port=port, http_host="127.0.0.1", test_tasks="true")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"producer not ready: {producer.log()[-2000:]}")
            time.sleep(0.1)
        yield url
        assert "Traceback" not in producer.log(), producer.log()[-4000:]
    asyncio.run(_delete(amqp_url, namespace))


async def _delete(amqp_url: str, namespace: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await delete_namespace(connection, Topology(namespace), ["default"])


@SCHEMA.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_answers_every_generated_request_as_documented(
    case: schemathesis.Case, producer_url: str
) -> None:
    case.call_and_validate(base_url=producer_url, checks=CHECKS, timeout=30)
