"""A long CPU-bound task must not starve AMQP heartbeats: the consumer keeps its connections."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from conveyor.producer.submission.submitter import Submitter, TaskSubmission
from conveyor.shared.records import TaskStatus
from tests.support import EventLog, ServiceProcess, wait_until

CONNECTION_TROUBLE = re.compile(
    r"reconnect|connection lost|was stuck|unexpected connection close|could not settle"
    r"|redelivered|heartbeat",
    re.IGNORECASE,
)


def broker_is_local_node(amqp_url: str) -> bool:
    """True when `rabbitmqctl` (default node) is the broker under test."""
    parts = urlsplit(amqp_url)
    return parts.hostname in {"127.0.0.1", "localhost"} and (parts.port or 5672) == 5672


async def connections_of(pid: int) -> frozenset[tuple[str, str]]:
    """(name, Erlang pid) of the broker connections of consumer process `pid` (listing only)."""
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", "list_connections", "--no-table-headers",
        "name", "pid", "client_properties",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode(errors="replace")
    mine = []
    for line in out.decode(errors="replace").splitlines():
        name, erlang_pid, properties = line.split("\t", 2)
        if re.search(rf'"connection_name","conveyor consumer [^"]*:{pid}:', properties):
            mine.append((name, erlang_pid))
    return frozenset(mine)


@pytest.mark.timeout(90)
async def test_30s_cpu_task_with_5s_heartbeats_keeps_the_connection_and_succeeds_once(
    amqp_url: str,
    submitter: Submitter,
    events: EventLog,
    spawn: Callable[..., ServiceProcess],
) -> None:
    consumer = spawn("consumer", heartbeat_s=5)
    await consumer.wait_log("consuming")
    check_connections = broker_is_local_node(amqp_url)
    task = await submitter.submit(TaskSubmission(task="cpu", payload={"ms": 30_000}))
    await events.wait_started(task.id)

    snapshots: list[frozenset[tuple[str, str]]] = []

    async def sample_until_finished() -> bool:
        if check_connections:
            snapshots.append(await connections_of(consumer.pid))
        return task.id in events.finished_ids()

    # 30 s of busy loop: six heartbeat intervals, three times the broker's dead-peer limit.
    await wait_until(sample_until_finished, 60, "the cpu task to finish")

    runs = events.runs_of(task.id)
    done = [e for e in events.of_state(TaskStatus.SUCCEEDED) if e.task_id == task.id]
    assert len(runs) == 1 and not runs[0].redelivered
    assert len(done) == 1 and not done[0].redelivered
    assert done[0].result["ms"] == 30_000 and done[0].result["iterations"] > 0
    assert done[0].at - runs[0].at >= 30
    assert events.of_state(TaskStatus.FAILED) == []
    assert consumer.proc.poll() is None
    trouble = [line for line in consumer.log().splitlines() if CONNECTION_TROUBLE.search(line)]
    assert trouble == []
    if check_connections:
        assert len(snapshots) >= 10
        assert len(snapshots[0]) == 2  # the consuming and the publishing connection
        assert all(snapshot == snapshots[0] for snapshot in snapshots)
