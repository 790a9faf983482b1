"""One event loop's measurements, in an order that lets drift on a shared machine cancel out.

    enqueue raw, Python | drain raw, store on | [HTTP producer up] enqueue HTTP |
    drain store off | enqueue HTTP [HTTP producer down] | drain store off |
    enqueue Python, raw | drain store on, raw | latency, alternating 1 s blocks

Each sequence is symmetric around its middle (drains raw, on, off, off, on, raw; enqueues
raw, Python, HTTP, HTTP, Python, raw), so a linear drift weighs on every kind alike. Store
off: consumers with CONVEYOR_EVENTS=false, nothing is recorded after the submission. Store
on: consumers publish status events and the in-process service's Recorder applies them; the
drain ends when the store shows every task `succeeded`.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
from aio_pika.abc import AbstractConnection

from bench.common import CONSUMER_PROCESSES, Children, Config, LoopName, child_env, say
from bench.conveyor import (
    CONSUMER_ARGV,
    consumer_env,
    latency_sender,
    producer_settings,
    submissions,
    submitter_for,
    subscribe_succeeded,
)
from bench.database import count_succeeded
from bench.http_producer import (
    HttpProducer,
    batch_bodies,
    free_port,
    open_http_producer,
    post_batches,
    producer_env,
)
from bench.measure import (
    LatencyResult,
    LatencySide,
    QueueProbe,
    Throughput,
    alternating_latency,
    measure_drain,
    pooled,
    timed_enqueue,
)
from bench.raw import RawPublisher, declare_raw, raw_consumer_argv, subscribe_replies
from conveyor.producer.store.database import TaskStore
from conveyor.producer.submission.submitter import Submitter

Results = dict[str, Throughput | LatencyResult]


class Bench:
    """The steps of one event loop's run; results land in `out` under stable keys."""

    def __init__(
        self,
        cfg: Config,
        loop: LoopName,
        children: Children,
        observer: AbstractConnection,
        database_url: str,
        out: Results,
    ) -> None:
        self.cfg, self.loop, self.children, self.out = cfg, loop, children, out
        self.observer = observer
        self.database_url = database_url
        self.probe = QueueProbe(observer)
        self.kept: list[subprocess.Popen[bytes]] = []

    def _say(self, message: str) -> None:
        say(f"[{self.loop}] {message}")

    def _record(self, key: str, sample: Throughput) -> None:
        """Keep a sample and show its rate: the spread between rounds tells how noisy it was."""
        self.out[key] = sample
        self._say(f"{key}: {sample.per_s:,.0f} tasks/s")

    async def _expect_depth(self, queue: str) -> None:
        """Warn if a pre-filled queue does not hold exactly the tasks just published."""
        messages, _ = await self.probe.counts(queue)
        if messages != self.cfg.tasks:
            say(f"warning: {queue} holds {messages} messages, expected {self.cfg.tasks}")

    async def enqueue_raw(self, publisher: RawPublisher, key: str) -> None:
        self._say(f"raw: enqueue {self.cfg.tasks} tasks")
        self._record(
            key,
            await timed_enqueue(
                self.cfg.tasks, publisher.publish_many(self.cfg.tasks), self.cfg.timeout_s
            ),
        )
        await self._expect_depth(self.cfg.names.raw_queue)

    async def enqueue_python(self, submitter: Submitter, key: str) -> None:
        items = submissions(self.cfg.tasks)  # built before the clock starts
        self._say(f"Python API: enqueue {self.cfg.tasks} tasks (one submit_many call)")
        self._record(
            key,
            await timed_enqueue(self.cfg.tasks, submitter.submit_many(items), self.cfg.timeout_s),
        )
        await self._expect_depth(self.cfg.names.conveyor_queue)

    async def enqueue_http(self, http: HttpProducer, key: str) -> None:
        cfg = self.cfg
        bodies = batch_bodies(cfg.tasks)  # encoded before the clock starts
        self._say(
            f"HTTP API: enqueue {cfg.tasks} tasks ({len(bodies)} POST /tasks/batch, "
            f"{cfg.http_concurrency} in flight)"
        )
        self._record(
            key,
            await timed_enqueue(
                cfg.tasks,
                post_batches(http.client, bodies, cfg.http_concurrency),
                cfg.timeout_s,
                publishers=[http.proc],
            ),
        )
        await self._expect_depth(cfg.names.conveyor_queue)

    @asynccontextmanager
    async def http_producer(self) -> AsyncIterator[HttpProducer]:
        """A `python -m conveyor.producer` process on the run's database, for the HTTP enqueues."""
        cfg, port = self.cfg, free_port()
        health = self.children.log_dir / "producer-alive"
        env = producer_env(
            cfg.url, cfg.names, cfg.queue_type, self.loop, self.database_url, port, health
        )
        self._say(f"starting the HTTP producer on port {port}")
        async with open_http_producer(self.children, env, port, f"producer-{self.loop}") as http:
            yield http

    def _consumers(
        self, events: bool | None, log_tasks: bool = True
    ) -> list[subprocess.Popen[bytes]]:
        """2 raw consumers (`events` None) or `python -m conveyor.consumer` with CONVEYOR_EVENTS
        and CONVEYOR_LOG_TASKS."""
        cfg = self.cfg
        if events is None:
            argv = raw_consumer_argv(cfg.url, cfg.names, self.loop)
            env, label = child_env({}), f"raw-{self.loop}"
        else:
            argv = CONSUMER_ARGV
            health = self.children.log_dir / "conveyor-alive"
            env = consumer_env(
                cfg.url, cfg.names, cfg.queue_type, self.loop, events, health, log_tasks
            )
            label = f"conveyor-{self.loop}-events-{'on' if events else 'off'}"
        return [self.children.spawn(argv, env, label) for _ in range(CONSUMER_PROCESSES)]

    async def drain(
        self,
        kind: str,
        n: int,
        events: bool | None,
        keep: bool = False,
        store: TaskStore | None = None,
        log_tasks: bool = True,
    ) -> None:
        """Start 2 consumer processes on a pre-filled queue and measure drain `n` of `kind`.

        With `store`, the drain also waits until the store shows every task of the queue
        `succeeded`: `{kind}_{n}` is then that time, `{kind}_emptied_{n}` the queue's alone.
        `keep` leaves the consumers running for the latency test.
        """
        key = f"{kind}_{n}"
        cfg = self.cfg
        queue = cfg.names.raw_queue if events is None else cfg.names.conveyor_queue
        settled = None
        if store is not None:
            target = await count_succeeded(store) + cfg.tasks

            async def settled() -> bool:
                return await count_succeeded(store) >= target

        procs = self._consumers(events, log_tasks)
        try:
            self._say(f"drain {key} with {CONSUMER_PROCESSES} processes")
            drain = await measure_drain(
                self.probe, queue, self.children, procs, cfg.timeout_s, settled
            )
            if events is not None:
                dead, _ = await self.probe.counts(cfg.names.conveyor.dead_letter_queue)
                if dead:
                    raise RuntimeError(
                        f"Conveyor dead-lettered {dead} bench tasks: invalid numbers"
                    )
        except BaseException:
            await self.children.stop(procs)
            raise
        if drain.settled is None:
            self._record(key, drain.emptied)
        else:
            self._record(f"{kind}_emptied_{n}", drain.emptied)
            self._record(key, drain.settled)
        if keep:
            self.kept.extend(procs)
        else:
            await self.children.stop(procs)

    async def latency(self, publisher: RawPublisher, submitter: Submitter) -> None:
        """Alternating steady-rate blocks; completions: raw replies, Conveyor succeeded events."""
        cfg = self.cfg
        raw_done: dict[str, float] = {}
        replies = await subscribe_replies(await self.observer.channel(), raw_done)

        async def send_raw(i: int) -> str:
            return await publisher.publish(i, reply_to=replies.name)

        raw = LatencySide(send_raw, raw_done)
        conveyor = LatencySide(latency_sender(submitter))
        await subscribe_succeeded(await self.observer.channel(), cfg.names, conveyor.completions)
        for queue in (cfg.names.raw_queue, cfg.names.conveyor_queue):
            await self.probe.wait_consumers(queue, CONSUMER_PROCESSES, self.children, self.kept)
        self._say(f"latency at {cfg.latency_rate:g}/s, alternating 1 s blocks")
        results = await alternating_latency(
            {"raw": raw, "conveyor": conveyor}, cfg.latency_rate, cfg.latency_seconds
        )
        self.out["latency_raw"], self.out["latency_conveyor"] = results["raw"], results["conveyor"]

    async def run(self) -> None:
        """Every step, in the order of the module docstring."""
        cfg = self.cfg
        setup = await self.observer.channel()
        await declare_raw(setup, cfg.names, cfg.queue_type)
        await setup.close()
        async with asyncio.timeout(15):
            publishing = await aio_pika.connect(cfg.url)
        settings = producer_settings(cfg.url, cfg.names, cfg.queue_type, self.database_url)
        try:
            async with publishing, submitter_for(settings) as submitter:
                publisher = await RawPublisher.open(publishing, cfg.names)
                await self._steps(publisher, submitter)
        finally:
            await self.children.stop(self.kept)
        self._pool()

    async def _log_tasks_steps(self, submitter: Submitter) -> None:
        """--log-tasks: store-off drains with the per-task log lines on, off, off, on."""
        for n, log_tasks in ((1, True), (1, False), (2, False), (2, True)):
            await self.enqueue_python(submitter, f"enqueue_python_{n}_{log_tasks}")
            kind = "drain_store_off" if log_tasks else "drain_log_tasks_off"
            await self.drain(kind, n, False, log_tasks=log_tasks)

    async def _steps(self, publisher: RawPublisher, submitter: Submitter) -> None:
        if self.cfg.log_tasks_only:
            await self._log_tasks_steps(submitter)
            return
        store = submitter.store
        await self.enqueue_raw(publisher, "enqueue_raw_1")
        await self.enqueue_python(submitter, "enqueue_python_1")
        await self.drain("drain_raw", 1, None)
        await self.drain("drain_store_on", 1, True, store=store)
        async with self.http_producer() as http:
            await self.enqueue_http(http, "enqueue_http_1")
            await self.drain("drain_store_off", 1, False)
            await self.enqueue_http(http, "enqueue_http_2")
        await self.drain("drain_store_off", 2, False)
        await self.enqueue_python(submitter, "enqueue_python_2")
        await self.enqueue_raw(publisher, "enqueue_raw_2")
        await self.drain("drain_store_on", 2, True, keep=True, store=store)
        await self.drain("drain_raw", 2, None, keep=True)
        await self.latency(publisher, submitter)

    def _pool(self) -> None:
        """Each kind's two samples as one (total tasks over total time)."""
        out = self.out
        for kind in (
            "enqueue_raw",
            "enqueue_python",
            "enqueue_http",
            "drain_raw",
            "drain_store_off",
            "drain_store_on",
            "drain_store_on_emptied",
            "drain_log_tasks_off",
        ):
            if f"{kind}_1" not in out:
                continue  # not measured in this mode
            samples = [out[f"{kind}_{n}"] for n in (1, 2)]
            out[kind] = pooled([s for s in samples if isinstance(s, Throughput)])
