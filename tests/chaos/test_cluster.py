"""Node loss on a 3-node RabbitMQ cluster of the test's own: 2 producer replicas (one
PostgreSQL store) and 3 consumers, every service given all three node URLs. While tasks are
submitted, the node leading the work queue is SIGKILLed and later started again, then a
second node likewise. Every task accepted with a 202 must end `succeeded` exactly once (the
store's records and the consumers' own events agree), none lost, none left queued or
running; a consumer whose node died carries on from another node without a restart.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import httpx
import pytest

from conveyor.shared.records import TERMINAL_STATUSES
from conveyor.shared.topology import Topology
from tests.chaos.cluster import RabbitCluster, rabbit_cluster
from tests.chaos.ledger import EventLedger
from tests.chaos.producer_api import all_records, settled
from tests.chaos.summary import ChaosRow, ChaosSummary
from tests.support import (
    RabbitNode,
    free_port,
    queue_depth,
    service_spawner,
    unique_namespace,
    wait_http,
    wait_until,
)

TASKS = 2_000
PRODUCERS = 2
CONSUMERS = 3
BATCH = 5
PACE_S = 0.25  # between one submitter's batches: 2 x 5 / 0.25 s = 40 tasks/s, about 50 s
KILL_AT = (0.2, 0.55)  # share of the tasks accepted when each node is killed
DOWN_S = 3.0  # a killed node stays down at least this long, and until 202s came back
REFUSALS = {"broker_unavailable", "publish_failed", "publish_unconfirmed"}
CONSUMER = {"ack_after_report": True}  # as in test_faults: no record left by a lost ack
PRODUCER = {"outbox_resend_after_s": 5}  # unconfirmed tasks are re-sent within the test


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    """Three clustered private nodes for this module (about 25 s to form); stopped by name."""
    with rabbit_cluster(3) as nodes:
        yield nodes


@dataclass
class Submissions:
    """What the submitters were told: every 202 (payload n -> id), every 503 and when."""

    accepted: dict[int, str] = field(default_factory=dict)
    refused: list[int] = field(default_factory=list)  # payload n of tasks answered 503
    kept: list[str] = field(default_factory=list)  # ids a 503 named as kept for the outbox
    refusals_at: list[float] = field(default_factory=list)  # monotonic time of each 503
    odd: list[str] = field(default_factory=list)  # any other answer

    def ids(self) -> list[str]:
        """Every task that must run: the accepted ones and those kept for the outbox."""
        return [*self.accepted.values(), *self.kept]


async def submit_until(
    api: httpx.AsyncClient,
    counter: Iterator[int],
    seen: Submissions,
    done: asyncio.Event,
    disrupted: asyncio.Event,
) -> None:
    """Post batches of echo tasks at the test's pace (one producer's client) until `done`:
    set once TASKS were accepted and both nodes were killed and back (on a slow machine the
    run goes on past TASKS rather than end before the second kill)."""
    while not done.is_set():
        ns = [next(counter) for _ in range(BATCH)]
        body = {"tasks": [{"task": "echo", "payload": {"n": n}} for n in ns]}
        try:
            response = await api.post("/tasks/batch", json=body)
        except httpx.TransportError as error:
            seen.odd.append(repr(error))
            continue
        if response.status_code == 202:
            items = response.json()["items"]
            seen.accepted.update(zip(ns, (item["id"] for item in items), strict=True))
        elif response.status_code == 503 and response.json()["error"] in REFUSALS:
            seen.refused.extend(ns)
            seen.refusals_at.append(time.monotonic())
            seen.kept.extend(response.json().get("task_ids", []))
        else:
            seen.odd.append(f"{response.status_code} {response.text[:300]}")
        if len(seen.accepted) >= TASKS and disrupted.is_set():
            done.set()
        await asyncio.sleep(PACE_S)


@dataclass
class Kill:
    """One node kill: which node, when, and the consumers that were consuming through it."""

    node: RabbitNode
    at: float  # monotonic
    at_epoch: float  # the consumers' clock, to compare with event times
    consumers: list[str]  # worker ids whose consuming connection was on the node

    def refused_for_s(self, seen: Submissions, until: float) -> float:
        """How long after the kill submissions were still answered 503 (0: never)."""
        late = [t for t in seen.refusals_at if self.at <= t < until]
        return max(late) - self.at if late else 0.0


def consumers_on(cluster: RabbitCluster, node: RabbitNode) -> list[str]:
    """Worker ids of the consumers whose consuming connection is on `node`."""
    prefix = "conveyor consumer "
    return [
        name.removeprefix(prefix)
        for name in cluster.connection_names(node)
        if name.startswith(prefix) and not name.endswith(")")  # not "(publish)"
    ]


def second_target(cluster: RabbitCluster, queue: str, spared: RabbitNode) -> RabbitNode:
    """The second node to kill: the queue's leader now if a consumer consumes through it,
    else a node a consumer consumes through (so some consumer's node dies), never `spared`."""
    leader = cluster.queue_leader(queue)
    others = [node for node in cluster.nodes if node is not spared]
    if leader is not spared and consumers_on(cluster, leader):
        return leader
    with_consumers = [node for node in others if consumers_on(cluster, node)]
    return with_consumers[0] if with_consumers else leader


async def work_queue_depth(cluster: RabbitCluster, queue: str) -> int:
    connection = await aio_pika.connect(cluster.alive()[0].url, timeout=10)
    try:
        return await queue_depth(await connection.channel(), queue)
    finally:
        await connection.close()


@pytest.mark.timeout(300)
async def test_2000_tasks_end_succeeded_once_while_the_queue_leader_and_a_second_node_are_killed(
    cluster: RabbitCluster, postgres_url: str, tmp_path: Path, chaos_summary: ChaosSummary
) -> None:
    started = time.monotonic()
    row = chaos_summary.add(ChaosRow("3-node cluster: leader + 2nd node SIGKILL"))
    namespace = unique_namespace("cluster")
    topology = Topology(namespace)
    work_queue = topology.work_queue("default")
    ledger = EventLedger(cluster.urls, topology, quorum=True)
    await ledger.connect()
    seen = Submissions()
    kills: list[Kill] = []
    clients: list[httpx.AsyncClient] = []
    try:
        with service_spawner(cluster.amqp_url, namespace, tmp_path) as start:
            ports = [free_port() for _ in range(PRODUCERS)]
            for port in ports:
                start(
                    "producer",
                    http_port=port,
                    http_host="127.0.0.1",
                    database_url=postgres_url,
                    **PRODUCER,
                )
            consumers = [start("consumer", **CONSUMER) for _ in range(CONSUMERS)]
            clients = [
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) for port in ports
            ]
            for client in clients:
                await wait_http(client, "/readyz", 60)
            for consumer in consumers:
                await consumer.wait_log("consuming", timeout_s=60)
            # Replicated over the cluster: a member on each of the 3 nodes.
            members = await asyncio.to_thread(cluster.queue_members, work_queue)
            assert sorted(members) == sorted(node.name for node in cluster.nodes)

            done, disrupted = asyncio.Event(), asyncio.Event()
            counter = itertools.count()
            submitters = [
                asyncio.create_task(submit_until(client, counter, seen, done, disrupted))
                for client in clients
            ]

            async def kill_and_restart(target: RabbitNode, at_share: float) -> None:
                await wait_until(
                    lambda: len(seen.accepted) >= at_share * TASKS,
                    120,
                    f"{at_share:.0%} of the tasks accepted",
                )
                on_node = await asyncio.to_thread(consumers_on, cluster, target)
                kills.append(Kill(target, time.monotonic(), time.time(), on_node))
                await asyncio.to_thread(cluster.kill, target)
                row.node_kills += 1
                await ledger.connect()  # its node may be the one that died
                accepted = len(seen.accepted)
                down_since = time.monotonic()
                refused, odd = len(seen.refusals_at), len(seen.odd)
                try:
                    await wait_until(
                        lambda: (
                            time.monotonic() - down_since >= DOWN_S
                            and len(seen.accepted) > accepted + 2 * BATCH
                        ),
                        90,  # under heavy load the broker nacked publishes for over a minute
                        "submissions to be accepted again with a node down",
                    )
                except AssertionError as error:
                    raise AssertionError(
                        f"{error}: {target.name} killed; since then "
                        f"{len(seen.accepted) - accepted} accepted, "
                        f"{len(seen.refusals_at) - refused} batches refused, "
                        f"other answers: {seen.odd[odd:][-3:]}"
                    ) from None
                await asyncio.to_thread(cluster.restart, target)
                row.restarts += 1

            try:
                leader = await asyncio.to_thread(cluster.queue_leader, work_queue)
                await kill_and_restart(leader, KILL_AT[0])
                second = await asyncio.to_thread(second_target, cluster, work_queue, leader)
                await kill_and_restart(second, KILL_AT[1])
                disrupted.set()
                await asyncio.wait_for(done.wait(), 120)
            finally:
                done.set()
                await asyncio.gather(*submitters)

            ids = seen.ids()
            row.tasks, row.refused = len(ids), len(seen.refused)
            await wait_until(lambda: ledger.finished(ids) == len(ids), 90, "every task to finish")
            await account(clients[0], ledger, seen, row, started, kills)
            assert await work_queue_depth(cluster, work_queue) == 0
            assert all(c.proc.poll() is None for c in consumers)  # none died or restarted
            # Each consumer whose node died ran tasks after the kill: it moved to another
            # node on its own (and at least one consumer's node was killed).
            for kill in kills:
                for worker in kill.consumers:
                    after = [
                        e
                        for e in ledger.events
                        if e.worker == worker and e.started_at and e.started_at > kill.at_epoch
                    ]
                    assert after, f"{worker} ran nothing after its node {kill.node.name} died"
            assert any(kill.consumers for kill in kills), [k.consumers for k in kills]
    finally:
        for client in clients:
            await client.aclose()
        await ledger.close(delete_queue=True)


async def account(
    api: httpx.AsyncClient,
    ledger: EventLedger,
    seen: Submissions,
    row: ChaosRow,
    started: float,
    kills: list[Kill],
) -> None:
    """Fill in `row` from the store and the ledger, then assert what the scenario promises."""
    ids = seen.ids()
    in_time = await settled(api, len(ids), timeout_s=60)
    records = await all_records(api)
    final = {record["id"]: record for record in records}
    row.lost = sum(1 for i in ids if final.get(i, {}).get("status") not in TERMINAL_STATUSES)
    row.redelivered = sum(1 for i in ids if i in final and final[i]["attempts"] > 1)
    row.duplicates = ledger.ran_twice(ids)
    ran = {e.result["n"] for e in ledger.events if e.task == "echo" and e.result}
    recorded = {r["payload"]["n"] for r in records if r["task"] == "echo"}
    row.unrecorded = len((ran & set(seen.refused)) - recorded)
    ends = [*(kill.at for kill in kills[1:]), time.monotonic()]
    windows = [kill.refused_for_s(seen, end) for kill, end in zip(kills, ends, strict=True)]
    row.refused_s = sum(windows)
    row.scenario += " (503 for " + ", ".join(f"{w:.1f}" for w in windows) + " s)"
    row.seconds = time.monotonic() - started

    assert seen.odd == [], seen.odd[:3]
    assert in_time and row.lost == 0, Counter(final.get(i, {}).get("status") for i in ids)
    assert Counter(r["id"] for r in records).most_common(1)[0][1] == 1  # one record per task
    assert Counter(final[i]["status"] for i in ids) == {"succeeded": len(ids)}
    runs = ledger.succeeded_runs()
    assert all(runs[i] == 1 for i in ids), Counter(runs[i] for i in ids)  # consumers' tally
    assert row.duplicates == 0
    assert recorded <= set(seen.accepted) | set(seen.refused)  # nothing beyond what was sent
    assert row.unrecorded == 0
    assert (await api.get("/dead-letters")).json()["items"] == []
