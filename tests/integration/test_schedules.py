"""Cron schedules end to end: producer processes, RabbitMQ (leader election), SQLite and
PostgreSQL. Tasks are only recorded and enqueued here; no consumer needs to run them."""

from __future__ import annotations

import asyncio
import math
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx

from conveyor.shared.ids import tick_task_id
from conveyor.shared.topology import Topology
from tests.support import ServiceProcess, free_port, wait_http, wait_until

Spawn = Callable[..., ServiceProcess]
EVERY_SECOND = "* * * * * *"


async def _start_producer(
    spawn: Spawn, **settings: Any
) -> tuple[ServiceProcess, httpx.AsyncClient]:
    """A producer process on a free port, ready, and its client (closed by the caller)."""
    port = free_port()
    process = spawn("producer", http_port=port, http_host="127.0.0.1", **settings)
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)
    await wait_http(client, "/readyz", 30)
    return process, client


async def _leader(api: httpx.AsyncClient) -> tuple[str | None, str]:
    page = (await api.get("/schedules")).json()
    return page["leader"], page["this_replica"]


async def _fired_ticks(api: httpx.AsyncClient, name: str) -> list[float]:
    """The ticks of schedule `name` that have a task, sorted; each task's id must be the
    tick's deterministic id and its idempotency key unique."""
    items = (await api.get("/tasks", params={"task": "echo", "limit": 500})).json()["items"]
    prefix = f"schedule:{name}:"
    keys = [item["idempotency_key"] for item in items if item["idempotency_key"]]
    mine = [item for item in items if (item["idempotency_key"] or "").startswith(prefix)]
    assert len(keys) == len(set(keys)), "an idempotency key was recorded twice"
    ticks = []
    for item in mine:
        tick = datetime.fromisoformat(item["idempotency_key"].removeprefix(prefix)).timestamp()
        assert item["id"] == tick_task_id(name, tick)
        assert item["request_id"] == f"schedule:{name}"
        ticks.append(tick)
    return sorted(ticks)


async def test_two_replicas_fire_each_tick_once_even_when_the_leader_is_killed(
    spawn: Spawn, postgres_url: str
) -> None:
    settings = {"database_url": postgres_url, "leader_timeout_s": 3}
    replicas = dict(await asyncio.gather(*(_start_producer(spawn, **settings) for _ in range(2))))
    apis = {process.pid: api for process, api in replicas.items()}
    try:
        api = next(iter(apis.values()))
        await wait_until(lambda: _has_leader(api), 10, "a scheduler leader")
        body = {"cron": EVERY_SECOND, "task": "echo", "payload": {"n": 1}, "misfire": "all"}
        started = time.time()
        assert (await api.put("/schedules/every-second", json=body)).status_code == 201

        await asyncio.sleep(5)  # the scenario: five seconds under the first leader
        leader_id, _ = await _leader(api)
        assert leader_id is not None
        [leader] = [p for p in replicas if p.pid == int(leader_id.rsplit(":", 2)[1])]
        [survivor] = [p for p in replicas if p is not leader]
        leader.signal(signal.SIGKILL)
        survivor_api = apis[survivor.pid]

        async def survivor_leads() -> bool:
            leading, this_replica = await _leader(survivor_api)
            return leading == this_replica

        # Within CONVEYOR_LEADER_TIMEOUT_S (3 s), plus a second for the asking.
        await wait_until(survivor_leads, 3 + 1, "the surviving replica to take over")

        await asyncio.sleep(max(0.0, started + 12 - time.time()))  # the rest of the 12 s
        assert (await survivor_api.delete("/schedules/every-second")).status_code == 204
        ticks: list[float] = []

        async def caught_up() -> bool:
            nonlocal ticks
            ticks = await _fired_ticks(survivor_api, "every-second")
            return len(ticks) >= 11

        await wait_until(caught_up, 5, "the ticks of 12 s to be fired")
        assert 11 <= len(ticks) <= 13, ticks
        # Every second once: the ticks in the leaderless gap were fired late (misfire all).
        assert ticks == [ticks[0] + n for n in range(len(ticks))]
        assert started < ticks[0] <= started + 2
    finally:
        for client in apis.values():
            await client.aclose()


async def _has_leader(api: httpx.AsyncClient) -> bool:
    return (await _leader(api))[0] is not None


async def test_schedule_api_errors_pause_resume_and_the_schedules_file(
    spawn: Spawn, tmp_path: Path
) -> None:
    path = tmp_path / "schedules.toml"
    path.write_text(
        f'[from-file]\ncron = "{EVERY_SECOND}"\ntask = "echo"\npayload = {{from = "file"}}\n'
        'misfire = "skip"\n'
    )
    _, api = await _start_producer(spawn, schedules_file=path, leader_timeout_s=3)
    try:
        page = (await api.get("/schedules")).json()
        [listed] = page["items"]
        assert listed["name"] == "from-file" and listed["source"] == "file"
        assert listed["payload"] == {"from": "file"} and len(listed["next_runs"]) == 5
        assert page["next_cursor"] is None and page["this_replica"]
        await wait_until(lambda: _has_leader(api), 10, "a scheduler leader")
        assert (await _leader(api))[0] == page["this_replica"]

        for body, code, field in [
            ({"cron": "61 * * * *", "task": "echo"}, "validation_error", "cron"),
            ({"cron": "* * * * *", "task": "echo", "timezone": "Mars/Base"}, "validation_error",
             "timezone"),
            ({"cron": "* * * * *", "task": "nope"}, "unknown_task", "task"),
            ({"cron": "* * * * *", "task": "sleep", "payload": {}}, "invalid_payload",
             "payload.seconds"),
        ]:  # fmt: skip
            reply = await api.put("/schedules/bad", json=body)
            assert reply.status_code == 422, reply.text
            assert reply.json()["error"] == code
            assert reply.json()["details"][0]["field"] == field
        assert (await api.get("/schedules/bad")).status_code == 404
        assert (await api.post("/schedules/bad/pause")).status_code == 404
        assert (await api.delete("/schedules/from-file")).status_code == 409

        await wait_until(
            lambda: _fired_ticks_at_least(api, "from-file", 1), 10, "a tick of the file schedule"
        )
        paused = await api.post("/schedules/from-file/pause")
        assert paused.status_code == 200 and paused.json()["paused"] is True
        paused_at = time.time()
        await asyncio.sleep(2.5)  # the scenario: paused for two and a half ticks
        resumed_at = time.time()
        resumed = await api.post("/schedules/from-file/resume")
        assert resumed.status_code == 200 and resumed.json()["paused"] is False
        ticks: list[float] = []

        async def fired_after_resume() -> bool:
            nonlocal ticks
            ticks = await _fired_ticks(api, "from-file")
            return ticks[-1] > resumed_at

        await wait_until(fired_after_resume, 5, "a tick after the resume")
        assert not [tick for tick in ticks if paused_at < tick <= resumed_at], ticks
    finally:
        await api.aclose()


async def _fired_ticks_at_least(api: httpx.AsyncClient, name: str, count: int) -> bool:
    return len(await _fired_ticks(api, name)) >= count


async def test_ticks_missed_without_a_leader_follow_the_misfire_policy(
    spawn: Spawn, amqp_url: str, namespace: str
) -> None:
    # The test holds the leader queue itself, like a leader that then dies: no producer
    # can fire until it lets go.
    holder = await aio_pika.connect(amqp_url)
    channel = await holder.channel()
    await channel.declare_queue(
        Topology(namespace).scheduler_leader_queue, exclusive=True, auto_delete=True
    )
    _, api = await _start_producer(spawn, leader_timeout_s=1.5)
    try:
        every_5_s = {"cron": "*/5 * * * * *", "task": "echo"}
        for misfire in ("skip", "once", "all"):
            reply = await api.put(f"/schedules/{misfire}", json=every_5_s | {"misfire": misfire})
            assert reply.status_code == 201
        assert (await _leader(api))[0] is None
        created = datetime.fromisoformat(reply.json()["created_at"]).timestamp()  # the latest
        first = math.floor(created / 5) * 5 + 5
        last_missed = first + 5  # two ticks fall while nobody leads
        # Let go 1.2 s after the last missed tick: the producer takes over within a second,
        # so its first round finds that tick missed (over 1 s late) and the next not due.
        await asyncio.sleep(last_missed + 1.2 - time.time())
        await holder.close()
        await wait_until(lambda: _has_leader(api), 3, "the producer to take over")
        await wait_until(
            lambda: _fired_ticks_at_least(api, "skip", 1), 10, "the next tick, on time"
        )
        on_time = last_missed + 5
        fired = {name: await _fired_ticks(api, name) for name in ("skip", "once", "all")}
        assert {name: [t for t in ticks if t <= on_time] for name, ticks in fired.items()} == {
            "skip": [on_time],
            "once": [last_missed, on_time],
            "all": [first, last_missed, on_time],
        }
    finally:
        await api.aclose()
        await holder.close()


async def test_a_bad_schedules_file_stops_the_producer_with_exit_code_2(
    spawn: Spawn, tmp_path: Path
) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text("nightly:\n  cron: '0 25 * * *'\n  task: echo\n")
    producer = spawn("producer", schedules_file=path, http_port=free_port())
    assert await producer.wait(30) == 2
    assert f"conveyor: CONVEYOR_SCHEDULES_FILE {path}: schedule 'nightly': cron:" in producer.log()
