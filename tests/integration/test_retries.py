"""Retries through delay queues: attempts, backoff, `retrying` records, the retry budget."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.integration.conftest import OpenApi, statuses_seen, wait_status
from tests.support import ServiceProcess


async def test_a_task_failing_twice_succeeds_on_attempt_3_after_backoff(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess]
) -> None:
    api = await open_api()
    spawn("consumer", retry_backoff_s=0.4)
    body = {"task": "fail", "payload": {"message": "flaky", "times": 2}}
    created = (await api.post("/tasks", json=body)).json()
    submitted = time.time()
    seen = await statuses_seen(api, created["id"], "succeeded")
    done = seen[-1]
    assert done["result"] == {"succeeded_on_attempt": 3} and done["attempts"] == 3
    assert done["error"] is None
    retrying = [r for r in seen if r["status"] == "retrying"]
    assert retrying, [r["status"] for r in seen]
    assert retrying[0]["error"]["message"] == "flaky" and retrying[0]["next_attempt_at"]
    # Backoff: 0.2-0.4 s before attempt 2, 0.4-0.8 s before attempt 3 (rounded to steps).
    assert time.time() - submitted >= 0.5


async def test_retries_exhausted_end_failed_after_max_retries_plus_one_attempts(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess]
) -> None:
    api = await open_api()
    spawn("consumer", retry_backoff_s=0.1)
    body = {"task": "fail", "payload": {"message": "never", "times": 4}, "max_retries": 2}
    created = (await api.post("/tasks", json=body)).json()
    failed = await wait_status(api, created["id"], "failed")
    assert failed["attempts"] == 3 and failed["error"]["message"] == "never"


async def test_permanent_failure_skips_retries_and_retry_asks_for_its_delay(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess]
) -> None:
    api = await open_api()
    spawn("consumer", retry_backoff_s=30)
    permanent = {"task": "fail", "payload": {"message": "bad input", "permanent": True}}
    asked = {"task": "fail", "payload": {"message": "later", "times": 1, "retry_after_s": 0.2}}
    permanent_id = (await api.post("/tasks", json=permanent)).json()["id"]
    asked_id = (await api.post("/tasks", json=asked)).json()["id"]
    failed = await wait_status(api, permanent_id, "failed")
    assert failed["attempts"] == 1 and failed["error"]["type"] == "PermanentFailure"
    # Retry(delay_s=0.2) overrides the 30 s backoff.
    done = await wait_status(api, asked_id, "succeeded", timeout_s=10)
    assert done["attempts"] == 2
