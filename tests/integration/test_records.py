"""Task records end to end: producer and consumer processes, RabbitMQ, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection

from conveyor.config import async_database_url
from conveyor.producer.store.database import TaskStore
from conveyor.producer.store.submissions import NewTask
from conveyor.shared.envelope import TaskMessage, encode
from conveyor.shared.events import EVENTS_ROUTING_KEY, encode_events, make_event
from conveyor.shared.ids import new_task_id
from conveyor.shared.records import TaskStatus
from conveyor.shared.topology import Topology
from tests.integration.conftest import OpenApi, statuses_seen, wait_status
from tests.support import EventLog, ServiceProcess, wait_until


async def test_lifecycle_queued_running_retrying_succeeded_and_failed(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess], database_url: str
) -> None:
    api = await open_api(database_url=database_url)
    sleeper = (await api.post("/tasks", json={"task": "sleep", "payload": {"seconds": 1.5}})).json()
    failing = {"task": "fail", "payload": {"message": "no"}, "max_retries": 1}
    failing = (await api.post("/tasks", json=failing)).json()
    assert (sleeper["status"], failing["status"]) == ("queued", "queued")
    assert (await api.get(f"/tasks/{sleeper['id']}")).json()["status"] == "queued"

    consumer = spawn("consumer", report_running_after_s=0.1, retry_backoff_s=1)
    running = await wait_status(api, sleeper["id"], "running")
    assert running["attempts"] == 1 and running["started_at"] and running["worker"]
    assert str(consumer.pid) in running["worker"]
    done = await wait_status(api, sleeper["id"], "succeeded")
    assert done["result"] == {"slept_s": 1.5}
    assert done["finished_at"] >= done["started_at"] >= done["created_at"]

    seen = await statuses_seen(api, failing["id"], "failed")
    assert [r["status"] for r in seen][-2:] == ["retrying", "failed"]
    assert seen[-2]["next_attempt_at"] and seen[-2]["error"]["message"] == "no"
    failed = seen[-1]
    assert failed["error"]["type"] == "TaskFailed" and failed["error"]["message"] == "no"
    assert "Traceback" in failed["error"]["traceback"]
    assert failed["attempts"] == 2 and failed["next_attempt_at"] is None

    listed = (await api.get("/tasks", params={"status": "failed"})).json()
    assert [item["id"] for item in listed["items"]] == [failing["id"]]


async def test_acking_after_the_report_records_every_task(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess]
) -> None:
    api = await open_api()
    spawn("consumer", ack_after_report=True)
    tasks = [{"task": "echo", "payload": {"n": n}} for n in range(50)]
    ids = [r["id"] for r in (await api.post("/tasks/batch", json={"tasks": tasks})).json()["items"]]
    for task_id in ids:
        record = await wait_status(api, task_id, "succeeded")
        assert record["attempts"] == 1


async def test_a_crash_redelivery_counts_as_a_second_attempt(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess]
) -> None:
    api = await open_api()
    first = spawn("consumer", report_running_after_s=0)
    task = (await api.post("/tasks", json={"task": "sleep", "payload": {"seconds": 2}})).json()
    running = await wait_status(api, task["id"], "running")
    assert str(first.pid) in running["worker"]
    first.signal(signal.SIGKILL)
    second = spawn("consumer")
    done = await wait_status(api, task["id"], "succeeded")
    assert done["attempts"] == 2 and str(second.pid) in done["worker"]


async def test_late_and_duplicate_events_never_move_a_record_back(
    open_api: OpenApi, broker: AbstractRobustConnection, topology: Topology, database_url: str
) -> None:
    api = await open_api(database_url=database_url)
    task_id = (await api.post("/tasks", json={"task": "echo"})).json()["id"]

    def event(state: TaskStatus, run: int = 1, **details: Any) -> Any:
        return make_event(task_id, "echo", state, 1, f"w-{run}", run=run, **details)

    channel = await broker.channel()
    exchange = await channel.get_exchange(topology.events_exchange)
    batches = [
        [event(TaskStatus.SUCCEEDED, result="first")],
        [event(TaskStatus.RUNNING)],  # late
        [event(TaskStatus.SUCCEEDED, result="duplicate")],  # duplicate
        [event(TaskStatus.FAILED, error={"type": "E", "message": "late"})],  # same rank
        [event(TaskStatus.RUNNING, run=2)],  # a later run after the end changes nothing
    ]
    for batch in batches:
        await exchange.publish(aio_pika.Message(encode_events(batch)), EVENTS_ROUTING_KEY)
    marker = (await api.post("/tasks", json={"task": "echo"})).json()["id"]
    marker_done = make_event(marker, "echo", TaskStatus.SUCCEEDED, 1, "w")
    await exchange.publish(aio_pika.Message(encode_events([marker_done])), EVENTS_ROUTING_KEY)
    await wait_status(api, marker, "succeeded")  # applied after everything above
    await channel.close()

    record = (await api.get(f"/tasks/{task_id}")).json()
    assert (record["status"], record["result"], record["worker"], record["attempts"]) == (
        "succeeded",
        "first",
        "w-1",
        1,
    )


async def test_a_resent_task_that_already_finished_is_acked_without_running(
    open_api: OpenApi,
    spawn: Callable[..., ServiceProcess],
    broker: AbstractRobustConnection,
    topology: Topology,
) -> None:
    api = await open_api()
    consumer = spawn("consumer")
    task = (await api.post("/tasks", json={"task": "echo", "payload": {"n": 1}})).json()
    await wait_status(api, task["id"], "succeeded")

    channel = await broker.channel()
    exchange = await channel.get_exchange(topology.tasks_exchange)
    copy = TaskMessage(id=task["id"], task="echo", queue="default", payload={"n": 1})
    await exchange.publish(encode(copy.resend()), routing_key="default")
    await channel.close()
    await consumer.wait_log(f"{task['id']}] skipped: already succeeded", timeout_s=20)
    assert consumer.log().count(f"{task['id']}") >= 1
    assert (await api.get(f"/tasks/{task['id']}")).json()["attempts"] == 1


async def test_outbox_sweeper_publishes_a_record_its_producer_never_did(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess], sqlite_url: str
) -> None:
    store = await TaskStore.open(async_database_url(sqlite_url))
    orphan = TaskMessage(id=new_task_id(), task="echo", queue="default", payload={"o": 1})
    # Written, never published:
    await store.submissions.add([NewTask(orphan, max_retries=3, timeout_s=300)])
    await store.close()
    api = await open_api(outbox_resend_after_s=0.5)
    spawn("consumer")
    done = await wait_status(api, orphan.id, "succeeded")
    assert done["result"] == {"o": 1} and done["attempts"] == 1


async def test_finished_records_are_purged_after_the_ttl(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await open_api(result_ttl_s=0.5)
    spawn("consumer")
    task_id = (await api.post("/tasks", json={"task": "echo"})).json()["id"]
    await wait_status(api, task_id, "succeeded")

    async def purged() -> bool:
        return (await api.get(f"/tasks/{task_id}")).status_code == 404

    await wait_until(purged, 90, "the finished record to be purged")


async def test_a_result_over_the_limit_fails_the_task_clearly(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess]
) -> None:
    api = await open_api()
    spawn("consumer", max_result_bytes=100)
    small = (await api.post("/tasks", json={"task": "echo", "payload": {"a": 1}})).json()
    big = (await api.post("/tasks", json={"task": "echo", "payload": {"a": "x" * 200}})).json()
    assert (await wait_status(api, small["id"], "succeeded"))["result"] == {"a": 1}
    failed = await wait_status(api, big["id"], "failed")
    assert failed["error"]["type"] == "InvalidResult"
    assert "CONVEYOR_MAX_RESULT_BYTES=100" in failed["error"]["message"]


@pytest.mark.timeout(300)
async def test_two_producers_on_postgres_and_three_consumers_run_2000_tasks_once(
    open_api: OpenApi,
    spawn: Callable[..., ServiceProcess],
    postgres_url: str,
    events: EventLog,
) -> None:
    apis = [await open_api(database_url=postgres_url) for _ in range(2)]
    for _ in range(3):
        spawn("consumer")
    ids: list[str] = []
    for n in range(20):
        batch = [{"task": "echo", "payload": {"n": n * 100 + i}} for i in range(100)]
        reply = await apis[n % 2].post("/tasks/batch", json={"tasks": batch})
        assert reply.status_code == 202, reply.text
        ids += [item["id"] for item in reply.json()["items"]]
    assert len(set(ids)) == 2000

    async def all_succeeded() -> bool:
        count = 0
        cursor = None
        while True:  # count every succeeded record, page by page
            params: dict[str, Any] = {"status": "succeeded", "limit": 500}
            if cursor:
                params["cursor"] = cursor
            page = (await apis[0].get("/tasks", params=params)).json()
            count += len(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                return count == 2000

    await wait_until(all_succeeded, 180, "2000 succeeded records")
    records: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = (await apis[1].get("/tasks", params=params)).json()
        records += page["items"]
        if not (cursor := page["next_cursor"]):
            break
    assert sorted(r["id"] for r in records) == sorted(ids)
    assert {r["status"] for r in records} == {"succeeded"}
    assert {r["attempts"] for r in records} == {1}
    assert all(r["result"] == r["payload"] for r in records)
    # Exactly once: one succeeded event per task, from the consumers themselves.
    await events.wait_finished(set(ids), timeout_s=30)
    assert set(events.succeeded_count().values()) == {1}


async def test_store_add_settles_fifty_concurrent_duplicates(database_url: str) -> None:
    store = await TaskStore.open(async_database_url(database_url))
    try:

        async def submit() -> tuple[str, bool]:
            message = TaskMessage(id=new_task_id(), task="echo", queue="default", payload={})
            [(record, created)] = await store.submissions.add(
                [NewTask(message, 3, 300.0, "same-key")]
            )
            return record.id, created

        outcomes = await asyncio.gather(*(submit() for _ in range(50)))
        assert len({task_id for task_id, _ in outcomes}) == 1
        assert sorted(created for _, created in outcomes) == [False] * 49 + [True]
        assert len((await store.records.list(limit=100)).items) == 1
    finally:
        await store.close()


async def test_store_add_settles_concurrent_batches_with_overlapping_keys(
    database_url: str,
) -> None:
    # A batch that loses a key race is inserted again in full: its first insert must have
    # left nothing behind (one atomic statement on PostgreSQL, a transaction on SQLite).
    store = await TaskStore.open(async_database_url(database_url))
    try:

        async def submit(first: int) -> list[tuple[str, bool]]:
            entries = [
                NewTask(
                    TaskMessage(id=new_task_id(), task="echo", queue="default", payload={}),
                    3,
                    300.0,
                    f"key-{(first + n) % 10}",
                )
                for n in range(5)
            ]
            return [
                (record.id, created) for record, created in await store.submissions.add(entries)
            ]

        # Three batches: each collision means another batch got in, so the third try succeeds
        # (Submissions.add gives up after INSERT_TRIES = 3).
        outcomes = await asyncio.gather(*(submit(first) for first in (0, 3, 6)))
        ids = {task_id for batch in outcomes for task_id, _ in batch}
        assert len(ids) == 10
        assert sum(created for batch in outcomes for _, created in batch) == 10
        assert len((await store.records.list(limit=100)).items) == 10
    finally:
        await store.close()


@pytest.mark.parametrize("result", [7, "123", 1.5, None, [1, "a"], {"k": {"n": 2**40}}, True])
async def test_store_keeps_any_json_result_as_it_was(database_url: str, result: Any) -> None:
    store = await TaskStore.open(async_database_url(database_url))
    try:
        message = TaskMessage(id=new_task_id(), task="echo", queue="default", payload={})
        await store.submissions.add([NewTask(message, 3, 300.0)])
        await store.events.apply(
            [make_event(message.id, "echo", TaskStatus.SUCCEEDED, 1, "w", result=result)]
        )
        record = await store.records.get(message.id)
        assert record is not None and record.status == "succeeded"
        assert record.result == result and type(record.result) is type(result)
    finally:
        await store.close()


async def test_fifty_concurrent_duplicate_posts_make_one_task(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess], database_url: str
) -> None:
    api = await open_api(database_url=database_url)
    consumer = spawn("consumer", log_format="json")
    body = {"task": "echo", "payload": {"order": 7}, "idempotency_key": "order-7"}
    replies = await asyncio.gather(
        *(api.post("/tasks", json=body, headers={"X-Request-ID": f"dup-{n}"}) for n in range(50))
    )
    assert sorted(reply.status_code for reply in replies) == [200] * 49 + [202]
    [task_id] = {reply.json()["id"] for reply in replies}
    winner = next(reply for reply in replies if reply.status_code == 202)
    done = await wait_status(api, task_id, "succeeded")
    assert done["attempts"] == 1 and done["idempotency_key"] == "order-7"
    assert done["request_id"] == winner.headers["X-Request-ID"]
    listed = (await api.get("/tasks", params={"limit": 100})).json()["items"]
    assert [item["id"] for item in listed] == [task_id]
    # A request id travels with its task into the consumer's log lines.
    failing = {"task": "fail", "payload": {"message": "traced"}}
    reply = await api.post("/tasks", json=failing, headers={"X-Request-ID": "trace-me"})
    await wait_status(api, reply.json()["id"], "failed")
    lines = [orjson.loads(line) for line in consumer.log().splitlines() if "traced" in line]
    assert lines and all(line["request_id"] == "trace-me" for line in lines)
