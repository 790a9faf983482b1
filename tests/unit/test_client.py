"""ConveyorClient and SyncConveyorClient against a fake HTTP API (httpx.MockTransport)."""

from __future__ import annotations

import itertools
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr, ValidationError

from conveyor import client as client_module
from conveyor.client import (
    ApiError,
    Conflict,
    ConveyorClient,
    InvalidRequest,
    RateLimited,
    RequeueOutcome,
    ServiceUnavailable,
    TaskNotFound,
    Unauthorized,
)
from conveyor.config import ClientSettings
from conveyor.shared.errors import ConveyorError
from conveyor.shared.records import TaskStatus
from conveyor.sync_client import SyncConveyorClient

API_URL = "http://api.test"
TOKEN = "s3cret-token"
KNOWN_TASKS = {"echo", "sleep", "fail"}
EPOCH = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _error(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = {"error": code, "message": message, "details": details or []}
    return httpx.Response(status, json=body, headers=headers)


class FakeApi:
    """The producer's HTTP API in miniature: records in a dict, per-task status scripts.

    `progress[task_id]` lists the statuses the task moves through, one per wait request;
    `dead` holds dead letters by task id, oldest first; `failure`, when set, is the reply
    to every request.
    """

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.records: dict[str, dict[str, Any]] = {}
        self.progress: dict[str, list[TaskStatus]] = {}
        self.dead: dict[str, dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.failure: httpx.Response | None = None
        self._numbers = itertools.count(1)
        self._request_ids = itertools.count(1)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def add(
        self, task: str = "echo", status: TaskStatus = TaskStatus.QUEUED, **fields: Any
    ) -> dict[str, Any]:
        number = next(self._numbers)
        record: dict[str, Any] = {
            "id": f"task-{number:04d}",
            "task": task,
            "queue": "default",
            "status": status.value,
            "payload": {},
            "attempts": 0,
            "max_retries": 3,
            "timeout_s": 300.0,
            "created_at": (EPOCH + timedelta(seconds=number)).isoformat(),
        }
        record.update(fields)
        self.records[record["id"]] = record
        if status.terminal:
            self._finish(record, status)
        return record

    def add_dead(
        self, task_id: str | None = None, reason: str = "failed", **fields: Any
    ) -> dict[str, Any]:
        """A dead letter: of a failed task made for it, or (with `task_id`) of no task."""
        if task_id is None:
            record = self.add("fail", TaskStatus.FAILED, attempts=4)
            task_id, task, queue = record["id"], record["task"], record["queue"]
        else:
            task = queue = None
        letter: dict[str, Any] = {
            "task_id": task_id,
            "task": task,
            "queue": queue,
            "reason": reason,
            "error": "TaskFailed: it [broke]",
            "attempts": 4,
            "dead_lettered_at": (EPOCH + timedelta(minutes=len(self.dead))).isoformat(),
        }
        letter.update(fields)
        self.dead[task_id] = letter
        return letter

    def bodies(self) -> list[Any]:
        return [orjson.loads(r.content) for r in self.requests if r.method == "POST"]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self._route(request)
        reply.headers["X-Request-ID"] = f"req-{next(self._request_ids)}"
        return reply

    def _route(self, request: httpx.Request) -> httpx.Response:
        if self.failure is not None:
            return self.failure
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "unauthorized", "a valid bearer token is required")
        parts = request.url.path.strip("/").split("/")
        match request.method, parts:
            case "POST", ["tasks"]:
                return self._submit(orjson.loads(request.content))
            case "POST", ["tasks", "batch"]:
                subs = orjson.loads(request.content)["tasks"]
                return httpx.Response(202, json={"items": [self._create(s) for s in subs]})
            case "GET", ["tasks"]:
                return self._list(request.url.params)
            case "GET", ["tasks", task_id]:
                return self._found(task_id, lambda record: record)
            case "GET", ["tasks", task_id, "wait"]:
                return self._found(task_id, self._advance)
            case "POST", ["tasks", task_id, "cancel"]:
                return self._cancel(task_id)
            case _, ["dead-letters", *_]:
                return self._route_dead_letters(request.method, parts, request.url.params)
        return _error(404, "not_found", "Not Found")

    def _cancel(self, task_id: str) -> httpx.Response:
        record = self.records.get(task_id)
        if record is None:
            return _error(404, "not_found", f"no task with id {task_id!r}")
        if TaskStatus(record["status"]).terminal:
            return _error(409, "conflict", f"task {task_id!r} is already {record['status']}")
        record["status"] = "cancelled"
        return httpx.Response(200, json=record)

    def _route_dead_letters(
        self, method: str, parts: list[str], params: httpx.QueryParams
    ) -> httpx.Response:
        match method, parts:
            case "GET", ["dead-letters"]:
                return self._page(list(reversed(self.dead.values())), params)
            case "POST", ["dead-letters", "requeue"]:
                outcomes = [self._requeue(task_id).status_code for task_id in list(self.dead)]
                counts = {"requeued": outcomes.count(200), "skipped": outcomes.count(409)}
                return httpx.Response(200, json=counts)
            case "POST", ["dead-letters", task_id, "requeue"]:
                return self._requeue(task_id)
            case "DELETE", ["dead-letters"]:
                purged, self.dead = len(self.dead), {}
                return httpx.Response(200, json={"purged": purged})
        return _error(404, "not_found", "Not Found")

    def _requeue(self, task_id: str) -> httpx.Response:
        letter = self.dead.get(task_id)
        if letter is None:
            return _error(404, "not_found", f"no task with id {task_id!r}")
        if letter["queue"] is None:
            message = f"dead letter {task_id!r} names no queue; purge it instead"
            return _error(409, "conflict", message)
        del self.dead[task_id]
        record = self.records[task_id]
        record.update(status=TaskStatus.QUEUED.value, finished_at=None, error=None)
        return httpx.Response(200, json=record)

    def _submit(self, body: dict[str, Any]) -> httpx.Response:
        if body["task"] not in KNOWN_TASKS:
            message = f"unknown task {body['task']!r}"
            detail = {"field": "task", "message": message, "type": "unknown_task"}
            return _error(422, "unknown_task", message, [detail])
        key = body.get("idempotency_key")
        for record in self.records.values():
            if key is not None and record["idempotency_key"] == key:
                return httpx.Response(200, json=record)
        return httpx.Response(202, json=self._create(body))

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        fields = {k: v for k, v in body.items() if k != "task"}
        return self.add(body["task"], **{"idempotency_key": None, **fields})

    def _found(self, task_id: str, view: Any) -> httpx.Response:
        record = self.records.get(task_id)
        if record is None:
            return _error(404, "not_found", f"task {task_id} not found")
        return httpx.Response(200, json=view(record))

    def _advance(self, record: dict[str, Any]) -> dict[str, Any]:
        script = self.progress.get(record["id"])
        if script:
            status = script.pop(0)
            record["status"] = status.value
            record["attempts"] = max(record["attempts"], 1)
            if status.terminal:
                self._finish(record, status)
        return record

    def _finish(self, record: dict[str, Any], status: TaskStatus) -> None:
        record["finished_at"] = (EPOCH + timedelta(minutes=1)).isoformat()
        record["worker"] = "worker-1"
        if status is TaskStatus.SUCCEEDED:
            record.setdefault("result", {"echo": record["payload"]})
        elif status is TaskStatus.FAILED:
            record["error"] = {"type": "TaskFailed", "message": "it [broke]", "traceback": "tb"}

    def _list(self, params: httpx.QueryParams) -> httpx.Response:
        records = [
            r
            for r in reversed(self.records.values())
            if params.get("status") in (None, r["status"])
            and params.get("task") in (None, r["task"])
        ]
        return self._page(records, params)

    def _page(self, items: list[dict[str, Any]], params: httpx.QueryParams) -> httpx.Response:
        start = int(params.get("cursor", "0"))
        end = start + int(params.get("limit", "50"))
        next_cursor = str(end) if end < len(items) else None
        return httpx.Response(200, json={"items": items[start:end], "next_cursor": next_cursor})


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
async def client(api: FakeApi) -> AsyncIterator[ConveyorClient]:
    async with ConveyorClient(API_URL, transport=api.transport()) as conveyor:
        yield conveyor


@pytest.fixture
def no_poll_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake answers waits at once; the client need not pace itself against it."""
    monkeypatch.setattr(client_module, "MIN_POLL_INTERVAL_S", 0.0)


async def test_submit_sends_only_the_given_fields_and_returns_the_record(
    client: ConveyorClient, api: FakeApi
) -> None:
    record = await client.submit("echo", {"greeting": "hi"})
    assert api.bodies() == [{"task": "echo", "payload": {"greeting": "hi"}}]
    assert api.requests[0].url == f"{API_URL}/tasks"
    assert api.requests[0].headers["Content-Type"] == "application/json"
    assert record.status is TaskStatus.QUEUED and record.payload == {"greeting": "hi"}
    assert record.id in api.records


async def test_submit_without_payload_omits_it(client: ConveyorClient, api: FakeApi) -> None:
    await client.submit("echo")
    assert api.bodies() == [{"task": "echo"}]


async def test_submit_sends_every_option(client: ConveyorClient, api: FakeApi) -> None:
    record = await client.submit(
        "sleep",
        {"seconds": 1},
        queue="slow",
        idempotency_key="k-1",
        max_retries=0,
        timeout_s=2.5,
    )
    assert api.bodies() == [
        {
            "task": "sleep",
            "payload": {"seconds": 1},
            "queue": "slow",
            "idempotency_key": "k-1",
            "max_retries": 0,
            "timeout_s": 2.5,
        }
    ]
    assert (record.queue, record.idempotency_key, record.max_retries) == ("slow", "k-1", 0)


async def test_submit_with_a_used_idempotency_key_returns_the_original_record(
    client: ConveyorClient, api: FakeApi
) -> None:
    first = await client.submit("echo", idempotency_key="same")
    again = await client.submit("echo", {"other": 1}, idempotency_key="same")
    assert again == first
    assert len(api.records) == 1


async def test_submit_many_returns_the_records_in_order_without_none_fields(
    client: ConveyorClient, api: FakeApi
) -> None:
    records = await client.submit_many(
        [{"task": "echo", "payload": {"n": 1}, "queue": None}, {"task": "sleep"}]
    )
    assert [r.task for r in records] == ["echo", "sleep"]
    assert api.bodies() == [{"tasks": [{"task": "echo", "payload": {"n": 1}}, {"task": "sleep"}]}]
    assert api.requests[0].url.path == "/tasks/batch"


async def test_get_returns_the_record(client: ConveyorClient, api: FakeApi) -> None:
    stored = api.add(status=TaskStatus.SUCCEEDED, payload={"a": 1})
    record = await client.get(stored["id"])
    assert record.id == stored["id"] and record.status is TaskStatus.SUCCEEDED
    assert record.result == {"echo": {"a": 1}}


async def test_get_quotes_the_task_id_into_one_path_segment(
    client: ConveyorClient, api: FakeApi
) -> None:
    with pytest.raises(TaskNotFound):
        await client.get("a/b?c")
    assert api.requests[0].url.raw_path == b"/tasks/a%2Fb%3Fc"


async def test_get_of_an_unknown_id_raises_task_not_found_with_the_api_message(
    client: ConveyorClient,
) -> None:
    with pytest.raises(TaskNotFound) as caught:
        await client.get("nope")
    error = caught.value
    assert str(error) == "task nope not found"
    assert (error.status, error.code, error.request_id) == (404, "not_found", "req-1")


async def test_list_without_filters_sends_no_params(client: ConveyorClient, api: FakeApi) -> None:
    api.add()
    page = await client.list()
    assert api.requests[0].url.params == httpx.QueryParams()
    assert len(page.items) == 1 and page.next_cursor is None


async def test_list_sends_the_given_filters_and_returns_the_page_newest_first(
    client: ConveyorClient, api: FakeApi
) -> None:
    ids = [api.add("echo", TaskStatus.FAILED)["id"] for _ in range(3)]
    api.add("sleep", TaskStatus.FAILED)
    page = await client.list(status=TaskStatus.FAILED, task="echo", limit=2)
    assert api.requests[0].url.params == httpx.QueryParams(
        {"status": "failed", "task": "echo", "limit": "2"}
    )
    assert [r.id for r in page.items] == [ids[2], ids[1]]
    assert page.next_cursor == "2"
    last = await client.list(status="failed", task="echo", limit=2, cursor=page.next_cursor)
    assert [r.id for r in last.items] == [ids[0]] and last.next_cursor is None


async def test_iter_tasks_follows_the_cursor_through_every_page(
    client: ConveyorClient, api: FakeApi
) -> None:
    ids = [api.add()["id"] for _ in range(5)]
    seen = [record.id async for record in client.iter_tasks(page_size=2)]
    assert seen == ids[::-1]
    assert [r.url.params.get("cursor") for r in api.requests] == [None, "2", "4"]
    assert {r.url.params["limit"] for r in api.requests} == {"2"}


async def test_wait_polls_until_the_task_is_terminal(
    client: ConveyorClient, api: FakeApi, no_poll_pause: None
) -> None:
    task_id = api.add()["id"]
    api.progress[task_id] = [TaskStatus.RUNNING, TaskStatus.RETRYING, TaskStatus.SUCCEEDED]
    record = await client.wait(task_id)
    assert record.status is TaskStatus.SUCCEEDED
    assert [r.url.path for r in api.requests] == [f"/tasks/{task_id}/wait"] * 3
    # No timeout: each request asks the server for its longest hold.
    assert {r.url.params["timeout_s"] for r in api.requests} == {"60.0"}


async def test_wait_splits_a_long_timeout_into_requests_of_at_most_60_s(
    client: ConveyorClient, api: FakeApi, no_poll_pause: None
) -> None:
    task_id = api.add()["id"]
    api.progress[task_id] = [TaskStatus.RUNNING, TaskStatus.FAILED]
    record = await client.wait(task_id, timeout_s=600)
    assert record.status is TaskStatus.FAILED
    assert all(float(r.url.params["timeout_s"]) <= 60 for r in api.requests)


async def test_wait_returns_the_latest_record_when_the_timeout_passes(
    client: ConveyorClient, api: FakeApi
) -> None:
    task_id = api.add()["id"]
    api.progress[task_id] = [TaskStatus.RUNNING] * 100
    record = await client.wait(task_id, timeout_s=0.3)
    assert record.status is TaskStatus.RUNNING
    assert float(api.requests[0].url.params["timeout_s"]) == pytest.approx(0.3, abs=0.01)
    # The fake answers at once, so the client paced itself instead of spinning.
    assert 1 < len(api.requests) < 5


async def test_wait_with_a_zero_timeout_fetches_the_record_once(
    client: ConveyorClient, api: FakeApi
) -> None:
    task_id = api.add()["id"]
    record = await client.wait(task_id, timeout_s=0)
    assert record.status is TaskStatus.QUEUED
    assert [r.url.params["timeout_s"] for r in api.requests] == ["0.0"]


async def test_the_bearer_token_is_sent_with_every_request() -> None:
    api = FakeApi(token=TOKEN)
    async with ConveyorClient(API_URL, token=TOKEN, transport=api.transport()) as conveyor:
        await conveyor.submit("echo")
        await conveyor.list()
    assert {r.headers["Authorization"] for r in api.requests} == {f"Bearer {TOKEN}"}


async def test_no_authorization_header_without_a_token(
    client: ConveyorClient, api: FakeApi
) -> None:
    await client.list()
    assert "Authorization" not in api.requests[0].headers


async def test_a_wrong_token_raises_unauthorized() -> None:
    api = FakeApi(token=TOKEN)
    async with ConveyorClient(API_URL, token="wrong", transport=api.transport()) as conveyor:
        with pytest.raises(Unauthorized, match="a valid bearer token is required"):
            await conveyor.list()


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "malformed_json", InvalidRequest),
        (401, "unauthorized", Unauthorized),
        (404, "not_found", TaskNotFound),
        (409, "conflict", Conflict),
        (413, "payload_too_large", InvalidRequest),
        (422, "validation_error", InvalidRequest),
        (422, "invalid_payload", InvalidRequest),
        (429, "rate_limited", RateLimited),
        (503, "broker_unavailable", ServiceUnavailable),
        (500, "internal_error", ApiError),
    ],
)
async def test_each_error_status_raises_its_exception_with_the_api_message(
    client: ConveyorClient, api: FakeApi, status: int, code: str, expected: type[ApiError]
) -> None:
    detail = {"field": "payload.seconds", "message": "must be >= 0", "type": "greater_than"}
    api.failure = _error(status, code, f"the {code} message", [detail])
    with pytest.raises(expected) as caught:
        await client.submit("echo")
    error = caught.value
    assert type(error) is expected and isinstance(error, ConveyorError)
    assert str(error) == f"the {code} message"
    assert (error.status, error.code, error.request_id) == (status, code, "req-1")
    assert [(d.field, d.message, d.type) for d in error.details] == [
        ("payload.seconds", "must be >= 0", "greater_than")
    ]


async def test_a_503_carries_the_retry_after_hint(client: ConveyorClient, api: FakeApi) -> None:
    api.failure = _error(503, "publish_failed", "not confirmed", headers={"Retry-After": "5"})
    with pytest.raises(ServiceUnavailable) as caught:
        await client.submit("echo")
    assert caught.value.retry_after_s == 5.0


async def test_a_429_is_a_service_unavailable_with_the_retry_after_hint(
    client: ConveyorClient, api: FakeApi
) -> None:
    api.failure = _error(429, "rate_limited", "too many", headers={"Retry-After": "2"})
    with pytest.raises(ServiceUnavailable) as caught:
        await client.submit("echo")
    assert isinstance(caught.value, RateLimited)
    assert (caught.value.status, caught.value.retry_after_s) == (429, 2.0)


async def test_dead_letters_returns_a_page_newest_first(
    client: ConveyorClient, api: FakeApi
) -> None:
    letters = [api.add_dead() for _ in range(3)]
    page = await client.dead_letters(limit=2)
    assert api.requests[0].url.path == "/dead-letters"
    assert api.requests[0].url.params == httpx.QueryParams({"limit": "2"})
    assert [d.task_id for d in page.items] == [letters[2]["task_id"], letters[1]["task_id"]]
    assert page.items[0].reason == "failed" and page.items[0].attempts == 4
    assert page.items[0].dead_lettered_at == EPOCH + timedelta(minutes=2)
    last = await client.dead_letters(limit=2, cursor=page.next_cursor)
    assert [d.task_id for d in last.items] == [letters[0]["task_id"]]
    assert last.next_cursor is None


async def test_dead_letters_without_arguments_sends_no_params(
    client: ConveyorClient, api: FakeApi
) -> None:
    page = await client.dead_letters()
    assert api.requests[0].url.params == httpx.QueryParams()
    assert page.items == [] and page.next_cursor is None


async def test_requeue_returns_the_queued_record(client: ConveyorClient, api: FakeApi) -> None:
    task_id = api.add_dead()["task_id"]
    record = await client.requeue(task_id)
    assert (api.requests[0].method, api.requests[0].url.path) == (
        "POST",
        f"/dead-letters/{task_id}/requeue",
    )
    assert record.id == task_id and record.status is TaskStatus.QUEUED
    assert api.dead == {}


async def test_requeue_quotes_the_task_id_into_one_path_segment(
    client: ConveyorClient, api: FakeApi
) -> None:
    with pytest.raises(TaskNotFound):
        await client.requeue("a/b?c")
    assert api.requests[0].url.raw_path == b"/dead-letters/a%2Fb%3Fc/requeue"


async def test_requeue_of_a_dead_letter_that_is_no_task_raises_conflict(
    client: ConveyorClient, api: FakeApi
) -> None:
    api.add_dead("garbage-1", reason="rejected")
    with pytest.raises(Conflict, match="names no queue; purge it instead") as caught:
        await client.requeue("garbage-1")
    assert (caught.value.status, caught.value.code) == (409, "conflict")


async def test_requeue_all_says_how_many_were_requeued_and_skipped(
    client: ConveyorClient, api: FakeApi
) -> None:
    api.add_dead()
    api.add_dead()
    api.add_dead("garbage-1", reason="rejected")
    outcome = await client.requeue_all()
    assert outcome == RequeueOutcome(requeued=2, skipped=1)
    assert (api.requests[0].method, api.requests[0].url.path) == ("POST", "/dead-letters/requeue")
    assert list(api.dead) == ["garbage-1"]


async def test_purge_dead_letters_returns_how_many_there_were(
    client: ConveyorClient, api: FakeApi
) -> None:
    api.add_dead()
    api.add_dead("garbage-1")
    assert await client.purge_dead_letters() == 2
    assert (api.requests[0].method, api.requests[0].url.path) == ("DELETE", "/dead-letters")
    assert api.dead == {}


async def test_a_non_json_error_body_maps_to_its_status_line(
    client: ConveyorClient, api: FakeApi
) -> None:
    api.failure = httpx.Response(502, text="<html>bad gateway</html>")
    with pytest.raises(ApiError) as caught:
        await client.get("x")
    assert str(caught.value) == "502 Bad Gateway"
    assert (caught.value.status, caught.value.code, caught.value.details) == (502, "http_error", [])


async def test_a_success_reply_that_is_not_a_record_raises_api_error(
    client: ConveyorClient, api: FakeApi
) -> None:
    api.failure = httpx.Response(200, text="<html>welcome to nginx</html>")
    with pytest.raises(ApiError, match="unexpected reply"):
        await client.get("x")


async def test_a_connection_error_raises_service_unavailable_without_the_token() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused (sent {request.headers['Authorization']})")

    transport = httpx.MockTransport(refuse)
    async with ConveyorClient(API_URL, token=TOKEN, transport=transport) as conveyor:
        with pytest.raises(ServiceUnavailable) as caught:
            await conveyor.get("x")
    message = str(caught.value)
    assert message == f"the API at {API_URL} is unreachable: refused (sent Bearer ***)"
    assert (caught.value.status, caught.value.code) == (None, "unreachable")


async def test_an_unreachable_api_is_named_without_the_password_of_its_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    transport = httpx.MockTransport(refuse)
    async with ConveyorClient("http://user:pw@api.test:9", transport=transport) as conveyor:
        with pytest.raises(ServiceUnavailable) as caught:
            await conveyor.get("x")
    assert str(caught.value) == "the API at http://user:***@api.test:9 is unreachable: refused"


async def test_a_closed_port_raises_service_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with ConveyorClient(f"http://127.0.0.1:{port}", token=TOKEN) as conveyor:
        with pytest.raises(ServiceUnavailable, match=f"127.0.0.1:{port} is unreachable"):
            await conveyor.list()


async def test_a_timeout_raises_service_unavailable() -> None:
    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with ConveyorClient(API_URL, transport=httpx.MockTransport(stall)) as conveyor:
        with pytest.raises(ServiceUnavailable, match="unreachable: no reply in time"):
            await conveyor.get("x")


async def test_from_settings_uses_the_url_token_and_timeout() -> None:
    api = FakeApi(token=TOKEN)
    settings = ClientSettings(api_url=API_URL, api_token=SecretStr(TOKEN), api_timeout_s=2.5)
    async with ConveyorClient.from_settings(settings, transport=api.transport()) as conveyor:
        await conveyor.list()
        assert (conveyor.url, conveyor.timeout_s) == (API_URL, 2.5)
    assert api.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert api.requests[0].extensions["timeout"]["read"] == 2.5


def test_client_settings_default_to_the_local_api() -> None:
    settings = ClientSettings()
    assert (settings.api_url, settings.api_token, settings.api_timeout_s) == (
        "http://127.0.0.1:8000",
        None,
        10.0,
    )


@pytest.mark.parametrize(
    "fields", [{"api_url": "ftp://api.test"}, {"api_url": "api.test"}, {"api_timeout_s": 0}]
)
def test_client_settings_reject_bad_values(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ClientSettings(**fields)


def test_sync_client_offers_every_method(api: FakeApi, no_poll_pause: None) -> None:
    with SyncConveyorClient(API_URL, transport=api.transport()) as conveyor:
        record = conveyor.submit("echo", {"n": 1}, queue="default", idempotency_key="k")
        assert conveyor.get(record.id) == record
        batch = conveyor.submit_many([{"task": "sleep"}, {"task": "fail"}])
        assert [r.task for r in batch] == ["sleep", "fail"]
        page = conveyor.list(limit=2)
        assert [r.id for r in page.items] == [batch[1].id, batch[0].id]
        assert [r.id for r in conveyor.iter_tasks(page_size=2)] == [
            batch[1].id,
            batch[0].id,
            record.id,
        ]
        api.progress[record.id] = [TaskStatus.RUNNING, TaskStatus.SUCCEEDED]
        assert conveyor.wait(record.id).status is TaskStatus.SUCCEEDED
        with pytest.raises(TaskNotFound):
            conveyor.get("nope")
        dead = [api.add_dead()["task_id"] for _ in range(3)]
        assert [d.task_id for d in conveyor.dead_letters(limit=5).items] == dead[::-1]
        assert conveyor.requeue(dead[0]).status is TaskStatus.QUEUED
        assert conveyor.requeue_all() == RequeueOutcome(requeued=2, skipped=0)
        api.add_dead("garbage-1")
        assert conveyor.purge_dead_letters() == 1


def test_sync_client_refuses_calls_after_close_and_closes_twice(api: FakeApi) -> None:
    conveyor = SyncConveyorClient(API_URL, transport=api.transport())
    conveyor.list()
    conveyor.close()
    conveyor.close()
    with pytest.raises(ConveyorError, match="closed"):
        conveyor.list()


async def test_submitting_the_task_object_validates_before_any_request() -> None:
    from conveyor.builtin_tasks import SleepPayload, sleep

    sent: list[httpx.Request] = []

    def api(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        body = orjson.loads(request.content)
        return httpx.Response(202, json=_record_of(body))

    async with ConveyorClient("http://api", transport=httpx.MockTransport(api)) as client:
        with pytest.raises(InvalidRequest) as refused:
            await client.submit(sleep, seconds="long")
        assert refused.value.status == 422 and sent == []
        assert [d.field for d in refused.value.details] == ["payload.seconds"]
        await client.submit(sleep, SleepPayload(seconds=1))
        await client.submit(sleep, seconds=2, queue="slow")
    bodies = [orjson.loads(request.content) for request in sent]
    assert bodies == [
        {"task": "sleep", "payload": {"seconds": 1.0}},
        {"task": "sleep", "payload": {"seconds": 2.0}, "queue": "slow"},
    ]


def _record_of(body: dict[str, object]) -> dict[str, object]:
    return {
        "id": "01a00000-0000-7000-8000-000000000000", "task": body["task"],
        "queue": body.get("queue", "default"), "status": "queued", "payload": body["payload"],
        "attempts": 0, "max_retries": 3, "timeout_s": 300.0,
        "created_at": "2026-12-02T00:00:00Z",
    }  # fmt: skip
