"""Floods: a bounded queue turns into 503s, a rate limit into 429s; every 202 task completes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from tests.integration.conftest import OpenApi, wait_status
from tests.support import ServiceProcess


async def test_a_full_queue_refuses_with_503_and_every_accepted_task_completes(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess]
) -> None:
    settings = {"max_queue_length": 5}
    api = await open_api(**settings)
    replies = [
        await api.post("/tasks", json={"task": "echo", "payload": {"n": n}}) for n in range(8)
    ]
    codes = [r.status_code for r in replies]
    accepted = codes.count(202)
    # Quorum queues check the limit just before each enqueue: they may take one more.
    assert accepted in (5, 6) and codes == [202] * accepted + [503] * (8 - accepted), codes
    refused = replies[-1].json()
    assert refused["error"] == "publish_failed" and "nacked" in refused["message"]
    assert int(replies[-1].headers["Retry-After"]) > 0
    page = (await api.get("/tasks", params={"limit": 100})).json()
    assert len(page["items"]) == accepted  # the refused ones left no record
    spawn("consumer", **settings)
    for reply in replies[:accepted]:
        assert (await wait_status(api, reply.json()["id"], "succeeded"))["attempts"] == 1


async def test_a_burst_over_the_rate_limit_gets_202_or_429_and_every_202_completes(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess]
) -> None:
    api = await open_api(rate_limit_per_s=5)
    spawn("consumer")
    replies = await asyncio.gather(
        *(api.post("/tasks", json={"task": "echo", "payload": {"n": n}}) for n in range(30))
    )
    codes = Counter(r.status_code for r in replies)
    assert set(codes) <= {202, 429, 503} and sum(codes.values()) == 30
    assert 5 <= codes[202] < 30 and codes[429] > 0
    limited = next(r for r in replies if r.status_code == 429)
    assert limited.json()["error"] == "rate_limited" and int(limited.headers["Retry-After"]) >= 1
    for reply in replies:
        if reply.status_code == 202:
            assert (await wait_status(api, reply.json()["id"], "succeeded"))["attempts"] == 1
    # Reads are never limited.
    assert (await api.get("/tasks")).status_code == 200
