"""Conveyor vs a minimal raw aio-pika pair, in one run with identical broker settings.

    .venv/bin/python -m bench.run [--tasks 20000] [--loop asyncio|uvloop|both]

Persistent messages, publisher confirms (256 outstanding), durable queues of the same type
and arguments, prefetch=1, manual acks, 2 consumer processes, a no-op task. Measures enqueue
and drain throughput, end-to-end latency at a steady rate and CPU per 1,000 tasks; prints
a table per event loop and one JSON line of everything at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal

if __package__ in (None, ""):  # run as `python bench/run.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aio_pika
from aio_pika.abc import AbstractConnection

from bench.common import (
    CONFIRM_WINDOW,
    CONSUMER_PROCESSES,
    DEFAULT_AMQP_URL,
    Children,
    LoopName,
    Names,
    check_loopback,
    child_env,
    run_on,
    say,
)
from bench.conveyor import (
    CONSUMER_ARGV,
    consumer_env,
    latency_sender,
    producer_settings,
    submissions,
    submitter_for,
    subscribe_succeeded,
)
from bench.measure import (
    LatencySide,
    QueueProbe,
    alternating_latency,
    measure_drain,
    pooled,
    timed_enqueue,
)
from bench.raw import RawPublisher, declare_raw, raw_consumer_argv, subscribe_replies
from bench.report import print_results
from producer.submission import Submitter

Results = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Config:
    """One run's parameters, the same for the raw pair and Conveyor."""

    url: str
    names: Names
    tasks: int
    latency_rate: float
    latency_seconds: float
    queue_type: Literal["quorum", "classic"]

    @property
    def timeout_s(self) -> float:
        """Deadline of one enqueue or drain: generous, but never endless."""
        return 60 + self.tasks / 100


class Bench:
    """One event loop's measurements, ordered ABBA so drift on a shared machine cancels.

    enqueue raw, Conveyor | drain raw, Conveyor (events off) | enqueue Conveyor, raw |
    drain Conveyor (events on), raw | latency, alternating 1 s blocks of raw and Conveyor
    with both consumer pairs attached.
    """

    def __init__(
        self,
        cfg: Config,
        loop: LoopName,
        children: Children,
        observer: AbstractConnection,
        out: Results,
    ) -> None:
        self.cfg, self.loop, self.children, self.out = cfg, loop, children, out
        self.observer = observer
        self.probe = QueueProbe(observer)
        self.kept: list[subprocess.Popen[bytes]] = []

    def _say(self, message: str) -> None:
        say(f"[{self.loop}] {message}")

    async def _expect_depth(self, queue: str) -> None:
        """Warn if a pre-filled queue does not hold exactly the tasks just published."""
        messages, _ = await self.probe.counts(queue)
        if messages != self.cfg.tasks:
            say(f"warning: {queue} holds {messages} messages, expected {self.cfg.tasks}")

    async def enqueue_raw(self, publisher: RawPublisher, key: str) -> None:
        self._say(f"raw: enqueue {self.cfg.tasks} tasks")
        self.out[key] = await timed_enqueue(
            self.cfg.tasks, publisher.publish_many(self.cfg.tasks), self.cfg.timeout_s
        )
        await self._expect_depth(self.cfg.names.raw_queue)

    async def enqueue_conveyor(self, submitter: Submitter, key: str) -> None:
        items = submissions(self.cfg.tasks)  # built before the clock starts
        self._say(f"Conveyor: enqueue {self.cfg.tasks} tasks (one submit_many call)")
        self.out[key] = await timed_enqueue(
            self.cfg.tasks, submitter.submit_many(items), self.cfg.timeout_s
        )
        await self._expect_depth(self.cfg.names.conveyor_queue)

    async def drain(self, key: str, events: bool | None, keep: bool) -> None:
        """Start 2 consumer processes on a pre-filled queue and measure its drain.

        `events` None: the raw consumer; else `python -m consumer` with CONVEYOR_EVENTS.
        `keep` leaves them running for the latency test.
        """
        cfg = self.cfg
        if events is None:
            argv, queue = raw_consumer_argv(cfg.url, cfg.names, self.loop), cfg.names.raw_queue
            env, label = child_env({}), f"raw-{self.loop}"
        else:
            argv, queue = CONSUMER_ARGV, cfg.names.conveyor_queue
            health = self.children.log_dir / "conveyor-alive"
            env = consumer_env(cfg.url, cfg.names, cfg.queue_type, self.loop, events, health)
            label = f"conveyor-{self.loop}-events-{'on' if events else 'off'}"
        procs = [self.children.spawn(argv, env, label) for _ in range(CONSUMER_PROCESSES)]
        try:
            self._say(f"drain {key} with {CONSUMER_PROCESSES} processes")
            self.out[key] = await measure_drain(
                self.probe, queue, self.children, procs, cfg.timeout_s
            )
            dead = (
                0 if events is None else (await self.probe.counts(f"{cfg.names.namespace}.dead"))[0]
            )
            if dead:
                raise RuntimeError(f"Conveyor dead-lettered {dead} bench tasks: invalid numbers")
        except BaseException:
            await self.children.stop(procs)
            raise
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
        cfg, out = self.cfg, self.out
        setup = await self.observer.channel()
        await declare_raw(setup, cfg.names, cfg.queue_type)
        await setup.close()
        async with asyncio.timeout(15):
            publishing = await aio_pika.connect(cfg.url)
        settings = producer_settings(cfg.url, cfg.names, cfg.queue_type)
        try:
            async with publishing, submitter_for(settings) as submitter:
                publisher = await RawPublisher.open(publishing, cfg.names)
                await self.enqueue_raw(publisher, "enqueue_raw_1")
                await self.enqueue_conveyor(submitter, "enqueue_conveyor_1")
                await self.drain("drain_raw_1", None, keep=False)
                await self.drain("drain_conveyor_events_off", False, keep=False)
                await self.enqueue_conveyor(submitter, "enqueue_conveyor_2")
                await self.enqueue_raw(publisher, "enqueue_raw_2")
                await self.drain("drain_conveyor_events_on", True, keep=True)
                await self.drain("drain_raw_2", None, keep=True)
                await self.latency(publisher, submitter)
        finally:
            await self.children.stop(self.kept)
        out["enqueue_raw"] = pooled([out["enqueue_raw_1"], out["enqueue_raw_2"]])
        out["enqueue_conveyor"] = pooled([out["enqueue_conveyor_1"], out["enqueue_conveyor_2"]])
        out["drain_raw"] = pooled([out["drain_raw_1"], out["drain_raw_2"]])


async def bench_loop(cfg: Config, loop: LoopName, children: Children, out: Results) -> None:
    """Every measurement for one event loop (bench process and consumers alike)."""
    async with asyncio.timeout(15):
        observer = await aio_pika.connect(cfg.url)
    async with observer:
        await Bench(cfg, loop, children, observer, out).run()


async def cleanup(url: str, names: Names) -> None:
    """Delete every queue and exchange of the run's namespace (the broker is shared)."""
    async with asyncio.timeout(60):
        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            for kind, name in [("queue", q) for q in names.queues()] + [
                ("exchange", x) for x in names.exchanges()
            ]:
                try:
                    if channel.is_closed:
                        channel = await connection.channel()
                    if kind == "queue":
                        await channel.queue_delete(name)
                    else:
                        await channel.exchange_delete(name)
                except Exception as error:
                    say(f"cleanup: could not delete {kind} {name}: {error!r}")
    say(f"cleanup: deleted the queues and exchanges of {names.namespace}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per enqueue/drain")
    parser.add_argument("--latency-rate", type=float, default=200.0, help="tasks/s")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop", "both"],
        default="uvloop",
        help="event loop of the bench and consumers (default uvloop: Conveyor's auto choice)",
    )
    parser.add_argument("--queue-type", choices=["quorum", "classic"], default="quorum")
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL, help="loopback brokers only")
    args = parser.parse_args(argv)
    if args.tasks < 100 or args.latency_rate <= 0 or args.latency_seconds <= 0:
        parser.error("--tasks must be >= 100, rate and seconds > 0")
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so children are killed and queues deleted."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config(
        url=check_loopback(args.amqp_url),
        names=Names(f"bench-{secrets.token_hex(4)}"),
        tasks=args.tasks,
        latency_rate=args.latency_rate,
        latency_seconds=args.latency_seconds,
        queue_type=args.queue_type,
    )
    loops: list[LoopName] = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    log_dir = Path(tempfile.mkdtemp(prefix=f"{cfg.names.namespace}-"))
    children = Children(log_dir)
    atexit.register(children.kill_all)
    signal.signal(signal.SIGTERM, _terminate)
    say(f"namespace {cfg.names.namespace}, child logs in {log_dir}")
    results: dict[str, Results] = {}
    failed = True
    try:
        for loop in loops:
            results[loop] = {}
            run_on(bench_loop(cfg, loop, children, results[loop]), loop)
        failed = False
    finally:
        children.kill_all()
        try:
            run_on(cleanup(cfg.url, cfg.names), "asyncio")
        finally:
            print_results(meta(cfg, complete=not failed), results)
            if not failed:
                shutil.rmtree(log_dir, ignore_errors=True)
    return 0


def meta(cfg: Config, complete: bool) -> dict[str, Any]:
    """The run's settings, printed with the results so the JSON line stands on its own."""
    return {
        "namespace": cfg.names.namespace,
        "tasks": cfg.tasks,
        "queue_type": cfg.queue_type,
        "latency_rate_per_s": cfg.latency_rate,
        "latency_seconds": cfg.latency_seconds,
        "consumer_processes": CONSUMER_PROCESSES,
        "prefetch": 1,
        "confirm_window": CONFIRM_WINDOW,
        "conveyor_enqueue": "one Submitter.submit_many call per N tasks",
        "conveyor_latency_publisher": "Submitter.submit",
        "raw_latency_publisher": "raw aio-pika publisher with confirms",
        "order": "ABBA: enqueue raw,conveyor; drain raw,conveyor(events off); "
        "enqueue conveyor,raw; drain conveyor(events on),raw; latency alternating 1 s blocks",
        "complete": complete,
    }


if __name__ == "__main__":
    sys.exit(main())
