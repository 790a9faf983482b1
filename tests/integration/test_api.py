"""The producer's HTTP API and the `conveyor` CLI over it, run as real processes."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection

from conveyor.shared.records import TaskStatus
from conveyor.shared.topology import Topology
from tests.support import (
    EventLog,
    ServiceProcess,
    consumer_env,
    free_port,
    queue_depth,
    unique_namespace,
    wait_http,
)

ECHO = {"task": "echo", "payload": {"a": 1}}


@pytest.fixture
async def api(
    topology: Topology, spawn: Callable[..., ServiceProcess]
) -> AsyncIterator[httpx.AsyncClient]:
    """`python -m conveyor.producer` on a free port, ready (connected to RabbitMQ); its client."""
    port = free_port()
    spawn("producer", http_port=port, http_host="127.0.0.1")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        await wait_http(client, "/readyz", 30)
        yield client


async def work_queue_depth(broker: AbstractRobustConnection, topology: Topology) -> int:
    channel = await broker.channel()
    try:
        return await queue_depth(channel, topology.work_queue("default"))
    finally:
        await channel.close()


def field_names(response: httpx.Response) -> list[str]:
    return [detail["field"] for detail in response.json()["details"]]


async def test_post_task_returns_202_queued_and_the_task_completes(
    api: httpx.AsyncClient, events: EventLog, spawn: Callable[..., ServiceProcess]
) -> None:
    spawn("consumer")
    response = await api.post("/tasks", json=ECHO)

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued"
    assert body["task"] == "echo" and body["queue"] == "default"
    assert body["payload"] == {"a": 1}
    assert body["id"]
    await events.wait_finished({body["id"]}, timeout_s=20)
    assert events.succeeded_count() == {body["id"]: 1}
    [done] = events.of_state(TaskStatus.SUCCEEDED)
    assert done.result == {"a": 1}


async def test_request_id_is_echoed_and_one_is_made_up_when_absent(
    api: httpx.AsyncClient,
) -> None:
    given = await api.post("/tasks", json=ECHO, headers={"X-Request-ID": "req-42"})
    made_up = await api.get("/healthz")

    assert given.status_code == 202
    assert given.headers["X-Request-ID"] == "req-42"
    assert len(made_up.headers["X-Request-ID"]) >= 16


async def test_batch_with_one_bad_item_is_refused_whole_and_publishes_nothing(
    api: httpx.AsyncClient, broker: AbstractRobustConnection, topology: Topology
) -> None:
    bad_batch = {
        "tasks": [
            {"task": "echo", "payload": {"n": 0}},
            {"task": "sleep", "payload": {"seconds": "x"}},
            {"task": "echo", "payload": {"n": 2}},
        ]
    }
    refused = await api.post("/tasks/batch", json=bad_batch)

    assert refused.status_code == 422, refused.text
    assert field_names(refused) == ["tasks.1.payload.seconds"]
    assert await work_queue_depth(broker, topology) == 0

    good_batch = {"tasks": [{"task": "echo", "payload": {"n": n}} for n in range(2)]}
    accepted = await api.post("/tasks/batch", json=good_batch)
    assert accepted.status_code == 202, accepted.text
    items = accepted.json()["items"]
    assert [item["status"] for item in items] == ["queued", "queued"]
    assert len({item["id"] for item in items}) == 2
    # Only the good batch's two tasks reached the queue.
    assert await work_queue_depth(broker, topology) == 2


@pytest.mark.parametrize(
    ("submission", "error", "field"),
    [
        ({"task": "no_such_task", "payload": {}}, "unknown_task", "task"),
        ({"task": "sleep", "payload": {"seconds": "x"}}, "invalid_payload", "payload.seconds"),
        ({"task": "echo", "payload": {}, "queue": "nowhere"}, "invalid_submission", "queue"),
    ],
    ids=["unknown-task", "invalid-payload", "unknown-queue"],
)
async def test_invalid_submission_is_refused_with_422_naming_the_field(
    api: httpx.AsyncClient,
    broker: AbstractRobustConnection,
    topology: Topology,
    submission: dict[str, Any],
    error: str,
    field: str,
) -> None:
    response = await api.post("/tasks", json=submission)

    assert response.status_code == 422, response.text
    assert response.json()["error"] == error
    assert field_names(response) == [field]
    assert await work_queue_depth(broker, topology) == 0


async def test_malformed_json_is_refused_with_400(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/tasks", content=b'{"task": "echo", ', headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "malformed_json"


async def test_health_readiness_and_docs_answer_200(api: httpx.AsyncClient) -> None:
    healthz, readyz, docs = await asyncio.gather(
        api.get("/healthz"), api.get("/readyz"), api.get("/docs")
    )

    assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})
    assert (readyz.status_code, readyz.json()) == (200, {"status": "ready"})
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def conveyor_command() -> str:
    """The `conveyor` console script of the interpreter running the tests."""
    script = Path(sys.executable).with_name("conveyor")
    assert script.exists(), f"no conveyor script next to {sys.executable}"
    return str(script)


async def run_cli(
    amqp_url: str, namespace: str, cwd: Path, *args: str, **settings: str
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        conveyor_command(),
        *args,
        env={**os.environ, **consumer_env(amqp_url, namespace, **settings)},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_submits_waits_and_reads_records_through_the_api(
    amqp_url: str,
    namespace: str,
    api: httpx.AsyncClient,
    spawn: Callable[..., ServiceProcess],
    tmp_path: Path,
) -> None:
    spawn("consumer")
    cli = partial(run_cli, amqp_url, namespace, tmp_path, api_url=str(api.base_url))
    code, out, err = await cli("submit", "echo", "--payload", '{"a":1}', "--wait", "--json")
    assert code == 0, err
    record = orjson.loads(out)
    assert (record["status"], record["result"]) == ("succeeded", {"a": 1})

    code, out, err = await cli("submit", "fail", "--payload", '{"message":"no"}')
    assert code == 0, err
    failing = out.strip()
    code, out, err = await cli("wait", record["id"], failing, "--json")
    assert code == 1 and "did not succeed" in err
    assert [r["status"] for r in orjson.loads(out)] == ["succeeded", "failed"]

    code, out, _ = await cli("status", failing)
    assert code == 0 and "failed" in out and "no" in out
    code, out, _ = await cli("tasks", "--status", "succeeded", "--json")
    assert code == 0 and [r["id"] for r in orjson.loads(out)["items"]] == [record["id"]]


async def test_cli_submit_with_bad_payload_json_exits_2_with_one_line(
    amqp_url: str, namespace: str, tmp_path: Path
) -> None:
    code, out, err = await run_cli(
        amqp_url, namespace, tmp_path, "submit", "echo", "--payload", "{a:1"
    )

    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "--payload" in err


async def test_producer_without_a_reachable_broker_is_alive_but_answers_503(
    tmp_path: Path,
) -> None:
    port = free_port()
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    env = consumer_env(
        closed,
        unique_namespace("nobroker"),
        http_port=port,
        http_host="127.0.0.1",
        database_url=f"sqlite:///{tmp_path / 'tasks.db'}",
    )
    producer = ServiceProcess("producer", env, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await wait_http(client, "/healthz", 20)

            started = time.monotonic()
            refused = await client.post("/tasks", json=ECHO, timeout=5)
            assert time.monotonic() - started < 5
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "broker_unavailable"
            assert int(refused.headers["Retry-After"]) > 0
            not_ready = await client.get("/readyz")
            assert not_ready.status_code == 503
            assert "Retry-After" in not_ready.headers
            assert producer.proc.poll() is None
    finally:
        producer.stop()
