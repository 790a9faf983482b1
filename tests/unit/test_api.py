"""The HTTP API against a stand-in publisher (no broker) and a real SQLite store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from conveyor.producer.http.app import create_app
from conveyor.producer.monitoring.metrics import ProducerMetrics
from conveyor.producer.monitoring.watch import QueuePage
from conveyor.producer.runs.waiters import Waiters
from conveyor.producer.store.database import TaskStore
from conveyor.producer.submission.submitter import Submitter
from conveyor.shared.envelope import TaskMessage
from conveyor.shared.errors import BrokerUnavailable, PublishFailed, PublishUnconfirmed
from conveyor.shared.events import make_event
from conveyor.shared.records import TaskStatus
from tests.support import builtin_catalog


class FakePublisher:
    """Records publishes; can be told to fail like a broker would."""

    def __init__(self) -> None:
        self.published: list[TaskMessage] = []
        self.ready = True
        self.failure: Exception | None = None
        self.failure_for_n: dict[int, type[PublishFailed]] = {}  # by the payload's "n"

    async def publish(self, task: TaskMessage) -> None:
        if self.failure:
            raise self.failure
        failure = self.failure_for_n.get(task.payload.get("n", -1))
        if failure is not None:
            raise failure(task.id, "as told")
        self.published.append(task)

    async def publish_many(self, tasks: Sequence[TaskMessage]) -> None:
        for task in tasks:
            await self.publish(task)

    async def publish_all(self, tasks: Sequence[TaskMessage]) -> list[Exception | None]:
        outcomes: list[Exception | None] = []
        for task in tasks:
            try:
                await self.publish(task)
                outcomes.append(None)
            except Exception as error:
                outcomes.append(error)
        return outcomes


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@dataclass
class Backend:
    store: TaskStore | None = None
    submitter: Submitter | None = None
    waiters: Waiters = field(default_factory=Waiters)
    dead_letters: None = None
    canceller: None = None
    schedules: None = None
    workers: None = None
    watch: None = None
    metrics: ProducerMetrics = field(default_factory=ProducerMetrics)


@pytest.fixture
def backend(publisher: FakePublisher, store: TaskStore) -> Backend:
    return Backend(store, Submitter(builtin_catalog(), publisher, ["default"], store))


def _client(backend: Backend, **options: Any) -> httpx.AsyncClient:
    app = create_app(backend, max_batch_size=5, **options)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


@pytest.fixture
async def client(backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(backend) as http:
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
    async with _client(Backend()) as http:
        assert (await http.post("/tasks", json={"task": "echo"})).status_code == 503
        assert (await http.get("/tasks/x")).json()["error"] == "store_unavailable"
        assert (await http.get("/readyz")).status_code == 503
        assert (await http.get("/healthz")).status_code == 200


async def test_unknown_route_is_404_json(client: httpx.AsyncClient) -> None:
    reply = await client.get("/nope")
    assert reply.status_code == 404 and reply.json()["error"] == "not_found"


async def test_accepted_task_carries_its_resolved_options_in_record_and_message(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    plain = (await client.post("/tasks", json={"task": "echo"})).json()
    assert (plain["max_retries"], plain["timeout_s"]) == (3, 300.0)
    # Resolved once, here: the message carries them and no consumer derives them again.
    assert (publisher.published[0].max_retries, publisher.published[0].timeout_s) == (3, 300.0)
    custom = await client.post("/tasks", json={"task": "echo", "max_retries": 0, "timeout_s": 9})
    assert (custom.json()["max_retries"], custom.json()["timeout_s"]) == (0, 9.0)
    assert (publisher.published[1].max_retries, publisher.published[1].timeout_s) == (0, 9.0)


async def test_submitted_task_has_a_queued_record_until_events_move_it(
    client: httpx.AsyncClient, store: TaskStore
) -> None:
    created = (await client.post("/tasks", json={"task": "echo", "payload": {"a": 1}})).json()
    record = (await client.get(f"/tasks/{created['id']}")).json()
    assert record == created
    assert (record["status"], record["attempts"], record["worker"]) == ("queued", 0, None)
    assert record["created_at"].endswith("Z")
    await store.events.apply(
        [make_event(created["id"], "echo", TaskStatus.SUCCEEDED, 1, "w1", result={"a": 1})]
    )
    done = (await client.get(f"/tasks/{created['id']}")).json()
    assert (done["status"], done["result"], done["attempts"], done["worker"]) == (
        "succeeded",
        {"a": 1},
        1,
        "w1",
    )
    assert done["finished_at"] is not None


async def test_same_idempotency_key_returns_the_original_with_200(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    body = {"task": "echo", "idempotency_key": "order-7"}
    first = await client.post("/tasks", json=body)
    again = await client.post("/tasks", json={**body, "payload": {"other": True}})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == first.json()
    assert len(publisher.published) == 1


async def test_fifty_concurrent_duplicates_make_one_task(
    client: httpx.AsyncClient, publisher: FakePublisher
) -> None:
    body = {"task": "echo", "idempotency_key": "race"}
    replies = await asyncio.gather(*(client.post("/tasks", json=body) for _ in range(50)))
    assert sorted(r.status_code for r in replies) == [200] * 49 + [202]
    assert len({r.json()["id"] for r in replies}) == 1
    assert len(publisher.published) == 1


async def test_failed_publish_leaves_no_record(
    client: httpx.AsyncClient, publisher: FakePublisher, store: TaskStore
) -> None:
    publisher.failure = PublishFailed("t", "nacked by the broker")
    assert (await client.post("/tasks", json={"task": "echo"})).status_code == 503
    assert (await store.records.list()).items == []


async def test_unconfirmed_publish_keeps_the_record_for_the_outbox_and_names_it(
    client: httpx.AsyncClient, publisher: FakePublisher, store: TaskStore
) -> None:
    publisher.failure_for_n = {0: PublishUnconfirmed}
    body = {"task": "echo", "payload": {"n": 0}, "idempotency_key": "k-1"}
    reply = await client.post("/tasks", json=body)
    assert reply.status_code == 503 and int(reply.headers["Retry-After"]) > 0
    assert reply.json()["error"] == "publish_unconfirmed"
    [kept] = (await store.records.list()).items
    assert reply.json()["task_ids"] == [kept.id] and kept.status == TaskStatus.QUEUED
    assert [m.id for m in await store.submissions.unpublished(time.time() + 1)] == [kept.id]
    # The client's retry with the same key finds it: no second task, no second publish.
    publisher.failure_for_n = {}
    again = await client.post("/tasks", json=body)
    assert (again.status_code, again.json()["id"]) == (200, kept.id)
    assert publisher.published == []


async def test_a_batch_keeps_unconfirmed_and_confirmed_tasks_and_drops_refused_ones(
    client: httpx.AsyncClient, publisher: FakePublisher, store: TaskStore
) -> None:
    publisher.failure_for_n = {1: PublishFailed, 2: PublishUnconfirmed}
    tasks = [{"task": "echo", "payload": {"n": n}} for n in range(3)]
    reply = await client.post("/tasks/batch", json={"tasks": tasks})
    assert reply.status_code == 503 and reply.json()["error"] == "publish_unconfirmed"
    records = {r.payload["n"]: r for r in (await store.records.list()).items}
    assert sorted(records) == [0, 2]  # n=1 was refused: no record
    assert reply.json()["task_ids"] == [records[2].id]
    # n=0 was confirmed (marked published), n=2 waits for the sweeper.
    assert [m.id for m in await store.submissions.unpublished(time.time() + 1)] == [records[2].id]


async def test_unknown_id_is_404_on_every_task_route(client: httpx.AsyncClient) -> None:
    for reply in (
        await client.get("/tasks/nope"),
        await client.get("/tasks/nope/wait?timeout_s=0"),
        await client.post("/tasks/nope/cancel"),
    ):
        assert reply.status_code == 404
        assert reply.json() == {
            "error": "not_found",
            "message": "no task with id 'nope'",
            "details": [],
        }


@pytest.mark.parametrize("task_id", ["x" * 300, "%00garbage", "a%2Fb", "%C3%A9" * 40, " "])
async def test_an_id_of_any_shape_is_404_not_422(client: httpx.AsyncClient, task_id: str) -> None:
    for reply in (
        await client.get(f"/tasks/{task_id}"),
        await client.get(f"/tasks/{task_id}/wait?timeout_s=0"),
        await client.post(f"/tasks/{task_id}/cancel"),
    ):
        assert reply.status_code == 404, (task_id, reply.text)
        assert reply.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "cursor", ["\x00garbage", "nope", "x" * 300, "0193A8E2-7C1F-7E4A-9D2B-5F0C3B1A2E4D"]
)
async def test_an_invalid_cursor_is_422_naming_cursor(
    client: httpx.AsyncClient, cursor: str
) -> None:
    reply = await client.get("/tasks", params={"cursor": cursor})
    assert reply.status_code == 422, reply.text
    assert _fields(reply) == ["cursor"]


class FakeWorkers:
    async def list(self) -> list[Any]:
        return []


class FakeWatch:
    queues = QueuePage(items=[], read_at=1.0)


async def test_workers_and_queues_answer_the_page_shape(backend: Backend) -> None:
    """Every list is {"items": [...], "next_cursor": ...}: whole lists say null."""
    backend.workers = FakeWorkers()  # type: ignore[assignment]
    backend.watch = FakeWatch()  # type: ignore[assignment]
    async with _client(backend) as client:
        for path in ("/workers", "/queues"):
            reply = await client.get(path)
            assert reply.status_code == 200, reply.text
            assert reply.json()["items"] == [] and reply.json()["next_cursor"] is None


async def test_list_is_newest_first_with_cursor_pages_and_filters(
    client: httpx.AsyncClient, store: TaskStore
) -> None:
    tasks = [{"task": "echo", "payload": {"n": n}} for n in range(5)]
    ids = [
        i["id"] for i in (await client.post("/tasks/batch", json={"tasks": tasks})).json()["items"]
    ]
    await client.post("/tasks", json={"task": "sleep", "payload": {"seconds": 1}})
    await store.events.apply(
        [make_event(ids[0], "echo", TaskStatus.FAILED, 1, "w", error={"type": "E", "message": "m"})]
    )
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"task": "echo", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/tasks", params=params)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    failed = (await client.get("/tasks", params={"status": "failed"})).json()
    assert [item["id"] for item in failed["items"]] == [ids[0]]
    assert failed["items"][0]["error"] == {"type": "E", "message": "m", "traceback": None}
    bad = await client.get("/tasks", params={"status": "lost"})
    assert bad.status_code == 422 and _fields(bad) == ["status"]


async def test_wait_returns_when_the_task_finishes_or_at_the_timeout(
    client: httpx.AsyncClient, backend: Backend, store: TaskStore
) -> None:
    task_id = (await client.post("/tasks", json={"task": "echo"})).json()["id"]
    started = time.monotonic()
    timed_out = (await client.get(f"/tasks/{task_id}/wait", params={"timeout_s": 0.2})).json()
    assert timed_out["status"] == "queued" and time.monotonic() - started >= 0.2
    waiting = asyncio.create_task(client.get(f"/tasks/{task_id}/wait", params={"timeout_s": 30}))
    await asyncio.sleep(0.05)
    finished = await store.events.apply([make_event(task_id, "echo", TaskStatus.SUCCEEDED, 1, "w")])
    backend.waiters.notify(finished)
    reply = await asyncio.wait_for(waiting, 5)
    assert reply.json()["status"] == "succeeded"


async def test_body_over_the_limit_is_413(backend: Backend) -> None:
    async with _client(backend, max_payload_bytes=2048) as http:
        reply = await http.post("/tasks", json={"task": "echo", "payload": {"x": "y" * 3000}})
        assert reply.status_code == 413
        assert reply.json()["error"] == "payload_too_large"
        assert "X-Request-ID" in reply.headers
        assert (await http.post("/tasks", json={"task": "echo"})).status_code == 202


async def test_tokens_guard_every_endpoint_but_health(backend: Backend) -> None:
    async with _client(backend, api_tokens=["s3cret", "other"]) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            reply = await http.post("/tasks", json={"task": "echo"}, headers=headers)
            assert reply.status_code == 401 and reply.json()["error"] == "unauthorized"
            assert "s3cret" not in reply.text
            assert (await http.get("/tasks", headers=headers)).status_code == 401
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        ok = await http.post(
            "/tasks", json={"task": "echo"}, headers={"Authorization": "Bearer other"}
        )
        assert ok.status_code == 202


async def test_a_timeout_over_the_brokers_consumer_timeout_is_422(
    publisher: FakePublisher, store: TaskStore
) -> None:
    submitter = Submitter(builtin_catalog(), publisher, ["default"], store, 600)
    async with _client(Backend(store, submitter)) as http:
        reply = await http.post("/tasks", json={"task": "echo", "timeout_s": 595})
        assert reply.status_code == 422 and _fields(reply) == ["timeout_s"]
        assert "consumer_timeout of 600s" in reply.json()["message"]
        # echo's own default (300 s) fits; so does an explicit 590 s.
        assert (await http.post("/tasks", json={"task": "echo"})).status_code == 202
        ok = await http.post("/tasks", json={"task": "echo", "timeout_s": 590})
        assert ok.status_code == 202
        batch = {"tasks": [{"task": "echo"}, {"task": "echo", "timeout_s": 3600}]}
        refused = await http.post("/tasks/batch", json=batch)
        assert refused.status_code == 422 and _fields(refused) == ["tasks.1.timeout_s"]


async def test_openapi_documents_each_tasks_payload_and_the_bearer_scheme(
    backend: Backend,
) -> None:
    catalog = builtin_catalog()
    async with _client(backend, catalog=catalog, api_tokens=["t0ken"]) as http:
        document = await http.get("/openapi.json", headers={"Authorization": "Bearer t0ken"})
    schema = document.json()
    body = schema["paths"]["/tasks"]["post"]["requestBody"]["content"]["application/json"]
    union = body["schema"]
    assert union["discriminator"]["propertyName"] == "task"
    assert set(union["discriminator"]["mapping"]) == set(catalog)
    components = schema["components"]["schemas"]
    sleep = components["Submit_sleep"]["properties"]
    assert sleep["task"]["const"] == "sleep"
    assert components["SleepPayload"]["properties"]["seconds"]["maximum"] == 86_400
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert schema["security"] == [{"bearerAuth": []}]
    assert "/task-types" in schema["paths"]
