"""Failing tasks under kills and a broker restart: retries wait in RabbitMQ and survive it,
dead letters are kept and requeued with a fresh budget, a crash loop ends in the dead
letters, and a task whose consumer was SIGKILLed still meets its time limit on the next one."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import psutil
import pytest

from conveyor.shared.records import TERMINAL_STATUSES
from tests.chaos.conftest import OpenProducer
from tests.chaos.ledger import EventLedger
from tests.chaos.producer_api import (
    all_records,
    settled,
    submit_batches,
    wait_record,
)
from tests.chaos.summary import ChaosRow, ChaosSummary
from tests.support import RabbitNode, ServiceProcess, wait_until


async def submit(api: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await api.post("/tasks", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


@pytest.mark.timeout(240)
async def test_retries_and_dead_letters_survive_kills_and_a_broker_restart(
    running_node: RabbitNode,
    open_producer: OpenProducer,
    start_service: Callable[..., ServiceProcess],
    chaos_summary: ChaosSummary,
) -> None:
    started = time.monotonic()
    row = chaos_summary.add(ChaosRow("fail: retries, dead letter, requeue", tasks=2))
    backoff = {"retry_backoff_s": 2.0}  # the retries wait long enough to be caught waiting
    consumer = start_service("consumer", **backoff)
    producer = await open_producer()
    api = producer.api
    flaky = await submit(api, {"task": "fail", "payload": {"message": "flaky", "times": 2}})
    doomed_body = {"task": "fail", "payload": {"message": "not yet", "times": 4}, "max_retries": 2}
    doomed = await submit(api, doomed_body)
    await wait_record(api, flaky, "retrying")
    await wait_record(api, doomed, "retrying")

    # Both wait in delay queues: kill the consumer and the producer, restart the broker.
    for process in (consumer, producer.process):
        process.signal(signal.SIGKILL)
        assert await process.wait(10) == -signal.SIGKILL
        row.kills += 1
    await asyncio.to_thread(running_node.restart)
    row.restarts += 1
    consumer = start_service("consumer", **backoff)
    api = (await open_producer()).api  # the same store

    done = await wait_record(api, flaky, "succeeded", timeout_s=60)
    assert done["result"] == {"succeeded_on_attempt": 3} and done["attempts"] == 3
    failed = await wait_record(api, doomed, "failed", timeout_s=60)
    assert failed["attempts"] == 3 and failed["error"]["message"] == "not yet"

    async def listed() -> list[dict[str, Any]]:
        return list((await api.get("/dead-letters")).json()["items"])

    async def any_listed() -> bool:
        return bool(await listed())

    await wait_until(any_listed, 30, "the exhausted task's dead letter")
    [letter] = await listed()
    assert (letter["task_id"], letter["reason"], letter["attempts"]) == (doomed, "failed", 3)

    requeued = await api.post(f"/dead-letters/{doomed}/requeue")
    assert requeued.status_code == 200 and requeued.json()["status"] == "queued"
    assert await listed() == []
    # Attempt 4 fails; kill the consumer while attempt 5 waits; the next one runs it.
    await wait_record(api, doomed, "retrying")
    consumer.signal(signal.SIGKILL)
    assert await consumer.wait(10) == -signal.SIGKILL
    row.kills += 1
    start_service("consumer", **backoff)
    done = await wait_record(api, doomed, "succeeded", timeout_s=60)
    row.redelivered = sum(1 for r in await all_records(api) if r["attempts"] > 1)
    row.seconds = time.monotonic() - started
    # The requeue granted a fresh budget of 2 retries: attempt 4 failed, attempt 5 succeeded.
    assert done["result"] == {"succeeded_on_attempt": 5} and done["attempts"] == 5
    assert await listed() == []
    row.lost = 0  # both ended terminal (flaky succeeded; doomed failed, then succeeded)


@pytest.mark.timeout(180)
async def test_a_task_crashing_its_consumer_every_time_is_dead_lettered_and_the_rest_finish(
    open_producer: OpenProducer,
    start_service: Callable[..., ServiceProcess],
    ledger: EventLedger,
    chaos_summary: ChaosSummary,
) -> None:
    started = time.monotonic()
    row = chaos_summary.add(ChaosRow("crash loop"))
    # Acks wait for the events' confirm: a crash right after a neighbour's ack would leave its
    # record behind otherwise (the documented window of the default, see README).
    settings = {"max_deliveries": 2, "test_tasks": "true", "ack_after_report": "true"}
    api = (await open_producer(**settings)).api
    crash = await submit(api, {"task": "crash", "payload": {}})
    neighbours = await submit_batches(
        api, [{"task": "echo", "payload": {"n": n}} for n in range(50)]
    )
    row.tasks = 1 + len(neighbours)
    consumers = [start_service("consumer", **settings) for _ in range(2)]
    crashed: list[ServiceProcess] = []

    async def dead_lettered() -> bool:
        for index, consumer in enumerate(consumers):
            if consumer.proc.poll() is not None:  # it crashed: its supervisor starts another
                crashed.append(consumer)
                consumers[index] = start_service("consumer", **settings)
        record = (await api.get(f"/tasks/{crash}")).json()
        return bool(record["status"] == "failed")

    await wait_until(dead_lettered, 120, "the crash loop to end in the dead letters")
    in_time = await settled(api, row.tasks, timeout_s=60)
    records = {r["id"]: r for r in await all_records(api)}
    row.kills = len(crashed)
    row.redelivered = sum(1 for r in records.values() if r["attempts"] > 1)
    row.duplicates = ledger.ran_twice(neighbours)
    row.lost = sum(
        1 for i in [crash, *neighbours] if records.get(i, {}).get("status") not in TERMINAL_STATUSES
    )
    row.seconds = time.monotonic() - started

    # The first delivery and at most max_deliveries redeliveries ran, then it stopped.
    assert 2 <= len(crashed) <= 3, len(crashed)
    assert all(c.proc.returncode == 1 for c in crashed)  # crash's exit code, no other death
    assert records[crash]["error"]["type"] == "DeadLettered"
    assert "delivery_limit" in records[crash]["error"]["message"]
    [letter] = (await api.get("/dead-letters")).json()["items"]
    assert (letter["task_id"], letter["reason"]) == (crash, "delivery_limit")
    # Started the first time and at each of its max_deliveries (2) redeliveries.
    assert letter["attempts"] == records[crash]["attempts"] == 3
    assert in_time and Counter(records[i]["status"] for i in neighbours) == {"succeeded": 50}


def alive(process: psutil.Process) -> bool:
    """Still running: not gone, not a zombie nobody reaped yet."""
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(120)
async def test_tasks_whose_consumer_was_sigkilled_time_out_on_the_next_consumer(
    open_producer: OpenProducer,
    start_service: Callable[..., ServiceProcess],
    chaos_summary: ChaosSummary,
) -> None:
    started = time.monotonic()
    row = chaos_summary.add(ChaosRow("time limits after SIGKILL", tasks=2))
    settings = {"concurrency": 2, "report_running_after_s": 0, "retry_backoff_s": 0.1}
    first = start_service("consumer", **settings)
    api = (await open_producer()).api
    cpu = await submit(
        api, {"task": "cpu", "payload": {"ms": 60_000}, "timeout_s": 3, "max_retries": 0}
    )
    slow = await submit(
        api, {"task": "sleep", "payload": {"seconds": 60}, "timeout_s": 3, "max_retries": 1}
    )
    await wait_record(api, cpu, "running")
    await wait_record(api, slow, "running")
    children = psutil.Process(first.pid).children(recursive=True)
    assert children  # the cpu task's child process

    first.signal(signal.SIGKILL)
    assert await first.wait(10) == -signal.SIGKILL
    row.kills = 1
    # The child burning CPU for the cpu task dies with its consumer, not 60 s later.
    await wait_until(lambda: not any(map(alive, children)), 10, "the killed consumer's children")
    second = start_service("consumer", **settings)

    killed = await wait_record(api, cpu, "failed", timeout_s=60)
    cancelled = await wait_record(api, slow, "failed", timeout_s=60)
    row.redelivered = 2
    row.seconds = time.monotonic() - started
    assert killed["error"]["type"] == "TaskTimedOut"
    assert "its process was killed" in killed["error"]["message"]
    # Started twice: on the killed consumer, then on the next one, where it timed out.
    assert killed["attempts"] == 2 and str(second.pid) in killed["worker"]
    assert cancelled["error"]["type"] == "TaskTimedOut"
    assert "it was cancelled" in cancelled["error"]["message"]
    # The kill did not spend its retry: killed, timed out (retry), timed out (failed).
    assert cancelled["attempts"] == 3 and str(second.pid) in cancelled["worker"]
    assert time.monotonic() - started < 50  # nobody waited out the 60 s tasks
    row.lost = 0  # both ended terminal
