"""Time limits: an async task is cancelled at its limit, a sync one's process is killed; the
slot serves the next task, and a limit the broker would cut short is refused up front."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.integration.conftest import OpenApi, wait_status
from tests.support import ServiceProcess


async def test_overrunning_tasks_fail_with_a_timeout_and_the_slot_moves_on(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess]
) -> None:
    api = await open_api()
    spawn("consumer")
    slow_async = {"task": "sleep", "payload": {"seconds": 60}, "timeout_s": 0.5, "max_retries": 0}
    slow_sync = {"task": "cpu", "payload": {"ms": 60_000}, "timeout_s": 1, "max_retries": 0}
    started = time.monotonic()
    async_id = (await api.post("/tasks", json=slow_async)).json()["id"]
    sync_id = (await api.post("/tasks", json=slow_sync)).json()["id"]
    after_id = (await api.post("/tasks", json={"task": "echo", "payload": {"n": 1}})).json()["id"]

    cancelled = await wait_status(api, async_id, "failed")
    assert cancelled["error"]["type"] == "TaskTimedOut"
    assert "time limit of 0.5s and it was cancelled" in cancelled["error"]["message"]
    killed = await wait_status(api, sync_id, "failed")
    assert killed["error"]["type"] == "TaskTimedOut"
    assert "its process was killed" in killed["error"]["message"]
    assert (await wait_status(api, after_id, "succeeded"))["result"] == {"n": 1}
    assert time.monotonic() - started < 30  # nobody waited out the 60 s tasks


async def test_a_timed_out_task_is_retried_per_its_policy(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess]
) -> None:
    api = await open_api()
    spawn("consumer", retry_backoff_s=0.1)
    body = {"task": "sleep", "payload": {"seconds": 30}, "timeout_s": 0.3, "max_retries": 1}
    task_id = (await api.post("/tasks", json=body)).json()["id"]
    failed = await wait_status(api, task_id, "failed")
    assert failed["attempts"] == 2 and failed["error"]["type"] == "TaskTimedOut"


async def test_a_timeout_longer_than_the_brokers_consumer_timeout_is_refused(
    open_api: OpenApi,
) -> None:
    api = await open_api(broker_consumer_timeout_s=120)
    refused = await api.post("/tasks", json={"task": "echo", "timeout_s": 115})
    assert refused.status_code == 422
    assert refused.json()["details"][0]["field"] == "timeout_s"
    assert "CONVEYOR_BROKER_CONSUMER_TIMEOUT_S" in refused.json()["message"]
