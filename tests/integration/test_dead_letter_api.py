"""Dead letters through the producer: kept in the store, listed, requeued, purged; crash loops
end there instead of looping."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aio_pika.abc import AbstractRobustConnection

from conveyor.shared.topology import Topology
from tests.integration.conftest import OpenApi, statuses_seen, wait_status
from tests.integration.test_dead_letters import envelope_headers, inject
from tests.support import ServiceProcess, wait_until


async def test_exhausted_task_is_listed_then_requeued_with_a_fresh_budget_and_succeeds(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess]
) -> None:
    api = await open_api()
    spawn("consumer", retry_backoff_s=0.1)
    body = {"task": "fail", "payload": {"message": "not yet", "times": 4}, "max_retries": 2}
    task_id = (await api.post("/tasks", json=body)).json()["id"]
    failed = await wait_status(api, task_id, "failed")
    assert failed["attempts"] == 3

    async def listed() -> bool:
        return bool((await api.get("/dead-letters")).json()["items"])

    await wait_until(listed, 20, "the dead letter to be listed")
    page = (await api.get("/dead-letters")).json()
    [letter] = page["items"]
    assert page["next_cursor"] is None
    assert (letter["task_id"], letter["task"], letter["reason"]) == (task_id, "fail", "failed")
    assert letter["attempts"] == 3 and "not yet" in letter["error"]
    assert letter["dead_lettered_at"].endswith("Z")

    requeued = await api.post(f"/dead-letters/{task_id}/requeue")
    assert requeued.status_code == 200 and requeued.json()["status"] == "queued"
    assert (await api.get("/dead-letters")).json()["items"] == []
    seen = await statuses_seen(api, task_id, "succeeded")
    done = seen[-1]
    # Attempt 4 fails (times=4), attempt 5 succeeds: the requeue granted 2 more retries.
    assert done["result"] == {"succeeded_on_attempt": 5} and done["attempts"] == 5
    assert done["id"] == task_id


async def test_what_is_no_task_can_be_purged_but_not_requeued(
    open_api: OpenApi,
    spawn: Callable[..., ServiceProcess],
    broker: AbstractRobustConnection,
    namespace: str,
) -> None:
    api = await open_api()
    consumer = spawn("consumer")
    await consumer.wait_log("consuming")
    topology = Topology(namespace)
    junk = await inject(broker, topology, b"{not json", envelope_headers("echo"))
    unknown = await inject(broker, topology, b"{}", envelope_headers("no_such_task"))

    async def both_listed() -> bool:
        return len((await api.get("/dead-letters")).json()["items"]) == 2

    await wait_until(both_listed, 20, "two dead letters")
    items = {i["task_id"]: i for i in (await api.get("/dead-letters")).json()["items"]}
    assert (items[junk]["reason"], items[unknown]["reason"]) == ("undecodable", "unknown_task")
    first = (await api.get("/dead-letters", params={"limit": 1})).json()
    second = (await api.get("/dead-letters", params={"cursor": first["next_cursor"]})).json()
    assert {first["items"][0]["task_id"], second["items"][0]["task_id"]} == {junk, unknown}

    refused = await api.post(f"/dead-letters/{junk}/requeue")
    assert refused.status_code == 409 and "purge it" in refused.json()["message"]
    missing = await api.post("/dead-letters/no-such-id/requeue")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    bad_cursor = await api.get("/dead-letters", params={"cursor": "nonsense"})
    assert bad_cursor.status_code == 422 and bad_cursor.json()["details"][0]["field"] == "cursor"

    purged = await api.delete("/dead-letters")
    assert purged.json() == {"purged": 2}
    assert (await api.get("/dead-letters")).json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_a_task_that_kills_its_consumer_every_time_is_dead_lettered_not_looped(
    open_api: OpenApi, spawn: Callable[..., ServiceProcess], queue_type: str
) -> None:
    # Quorum queues count deliveries themselves; on classic ones the run check counts.
    settings = {"max_deliveries": 2, "test_tasks": "true", "queue_type": queue_type}
    api = await open_api(**settings)
    task_id = (await api.post("/tasks", json={"task": "crash", "payload": {}})).json()["id"]
    consumers = [spawn("consumer", **settings)]

    async def dead_lettered() -> bool:
        if consumers[-1].proc.poll() is not None:  # it crashed: start the next one
            consumers.append(spawn("consumer", **settings))
        record = (await api.get(f"/tasks/{task_id}")).json()
        return bool(record["status"] == "failed")

    await wait_until(dead_lettered, 90, "the crash loop to end in the dead letters")
    crashed = [c for c in consumers if c.proc.poll() is not None]
    # The first delivery and at most max_deliveries redeliveries ran, then it stopped.
    assert 2 <= len(crashed) <= 3, len(crashed)
    record = (await api.get(f"/tasks/{task_id}")).json()
    assert record["error"]["type"] == "DeadLettered"
    assert "delivery_limit" in record["error"]["message"]
    [letter] = (await api.get("/dead-letters")).json()["items"]
    assert (letter["task_id"], letter["reason"]) == (task_id, "delivery_limit")
    assert "delivered more than 2 times" in letter["error"]
