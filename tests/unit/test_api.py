"""The HTTP API against a stand-in publisher (no broker): status codes and error bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest

from producer.api import create_app
from producer.submission import Submitter
from shared.builtin_tasks import builtin_catalog
from shared.envelope import TaskMessage
from shared.errors import BrokerUnavailable, PublishFailed


class FakePublisher:
    """Records publishes; can be told to fail like a broker would."""

    def __init__(self) -> None:
        self.published: list[TaskMessage] = []
        self.ready = True
        self.failure: Exception | None = None

    async def publish(self, task: TaskMessage) -> None:
        if self.failure:
            raise self.failure
        self.published.append(task)

    async def publish_many(self, tasks: Sequence[TaskMessage]) -> None:
        for task in tasks:
            await self.publish(task)


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
async def client(publisher: FakePublisher) -> AsyncIterator[httpx.AsyncClient]:
    submitter = Submitter(builtin_catalog(), publisher, ["default"])
    app = create_app(lambda: submitter, max_batch_size=5)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield http


async def test_submit_returns_202_with_the_queued_task(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    reply = await client.post("/tasks", json={"task": "sleep", "payload": {"seconds": 1}})
    assert reply.status_code == 202
    body = reply.json()
    assert body["status"] == "queued" and body["task"] == "sleep" and body["queue"] == "default"
    assert [t.id for t in publisher.published] == [body["id"]]
    assert publisher.published[0].payload == {"seconds": 1.0}


async def test_request_id_is_echoed_and_travels_with_the_task(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    reply = await client.post("/tasks", json={"task": "echo"}, headers={"X-Request-ID": "abc"})
    assert reply.headers["X-Request-ID"] == "abc"
    assert publisher.published[0].request_id == "abc"
    generated = await client.get("/healthz")
    assert len(generated.headers["X-Request-ID"]) == 32


def _fields(reply: httpx.Response) -> list[str]:
    return [detail["field"] for detail in reply.json()["details"]]


@pytest.mark.parametrize(
    ("body", "code", "fields"),
    [
        ({"task": "nope"}, "unknown_task", ["task"]),
        ({"task": "sleep", "payload": {"seconds": "x"}}, "invalid_payload", ["payload.seconds"]),
        ({"task": "sleep", "payload": {}}, "invalid_payload", ["payload.seconds"]),
        ({"task": "echo", "queue": "nowhere"}, "invalid_submission", ["queue"]),
        ({"payload": {}}, "validation_error", ["task"]),
        ({"task": "echo", "max_retries": -1}, "validation_error", ["max_retries"]),
        ({"task": "echo", "surprise": 1}, "validation_error", ["surprise"]),
        ([1, 2], "validation_error", ["body"]),
    ],
)
async def test_bad_submission_is_422_naming_the_field(
    client: httpx.AsyncClient,
    publisher: FakePublisher,
    body: Any,
    code: str,
    fields: list[str],
) -> None:
    reply = await client.post("/tasks", json=body)
    assert reply.status_code == 422
    assert reply.json()["error"] == code
    assert _fields(reply) == fields
    assert publisher.published == []


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    reply = await client.post(
        "/tasks", content=b'{"task": ', headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 400
    assert reply.json()["error"] == "malformed_json"


async def test_batch_is_validated_all_or_nothing(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    tasks = [{"task": "echo"}, {"task": "sleep", "payload": {"seconds": -1}}, {"task": "echo"}]
    reply = await client.post("/tasks/batch", json={"tasks": tasks})
    assert reply.status_code == 422
    assert _fields(reply) == ["tasks.1.payload.seconds"]
    assert publisher.published == []


async def test_batch_returns_items_in_order(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    tasks = [{"task": "echo", "payload": {"n": n}} for n in range(3)]
    reply = await client.post("/tasks/batch", json={"tasks": tasks})
    assert reply.status_code == 202
    items = reply.json()["items"]
    assert [item["payload"]["n"] for item in items] == [0, 1, 2]
    assert [t.id for t in publisher.published] == [item["id"] for item in items]


async def test_batch_over_the_limit_is_422(client: httpx.AsyncClient) -> None:
    reply = await client.post("/tasks/batch", json={"tasks": [{"task": "echo"}] * 6})
    assert reply.status_code == 422 and _fields(reply) == ["tasks"]


@pytest.mark.parametrize(
    "failure", [BrokerUnavailable("down"), PublishFailed("t-1", "nacked by the broker")]
)
async def test_broker_trouble_is_503_with_retry_after(
    client: httpx.AsyncClient, publisher: FakePublisher, failure: Exception
) -> None:
    publisher.failure = failure
    reply = await client.post("/tasks", json={"task": "echo"})
    assert reply.status_code == 503
    assert int(reply.headers["Retry-After"]) > 0
    assert reply.json()["error"] in {"broker_unavailable", "publish_failed"}


async def test_not_yet_connected_is_503_and_not_ready() -> None:
    app = create_app(lambda: None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        assert (await http.post("/tasks", json={"task": "echo"})).status_code == 503
        assert (await http.get("/readyz")).status_code == 503
        assert (await http.get("/healthz")).status_code == 200


async def test_unknown_route_is_404_json(client: httpx.AsyncClient) -> None:
    reply = await client.get("/nope")
    assert reply.status_code == 404 and reply.json()["error"] == "not_found"


async def test_accepted_task_shows_spec_defaults_and_overrides(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    plain = (await client.post("/tasks", json={"task": "echo"})).json()
    assert (plain["max_retries"], plain["timeout_s"]) == (3, 300.0)
    assert publisher.published[0].max_retries is None  # the consumer applies the spec's
    custom = await client.post("/tasks", json={"task": "echo", "max_retries": 0, "timeout_s": 9})
    assert (custom.json()["max_retries"], custom.json()["timeout_s"]) == (0, 9.0)
    assert (publisher.published[1].max_retries, publisher.published[1].timeout_s) == (0, 9.0)
