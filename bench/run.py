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
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass
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
    DrainResult,
    QueueProbe,
    measure_drain,
    paced_latency,
    timed_enqueue,
)
from bench.raw import RawPublisher, declare_raw, raw_consumer_argv, subscribe_replies
from bench.report import print_results

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


async def expect_depth(probe: QueueProbe, queue: str, tasks: int) -> None:
    """Warn if the pre-filled queue does not hold exactly the tasks just published."""
    messages, _ = await probe.counts(queue)
    if messages != tasks:
        say(f"warning: {queue} holds {messages} messages, expected {tasks}")


async def run_raw(
    cfg: Config, loop: LoopName, children: Children, observer: AbstractConnection, out: Results
) -> None:
    """Raw pair: enqueue N, drain them with 2 processes, then latency with the same ones."""
    names, probe = cfg.names, QueueProbe(observer)
    setup = await observer.channel()
    await declare_raw(setup, names, cfg.queue_type)
    await setup.close()
    async with asyncio.timeout(15):
        publishing = await aio_pika.connect(cfg.url)
    async with publishing:
        publisher = await RawPublisher.open(publishing, names)
        say(f"[{loop}] raw: enqueue {cfg.tasks} tasks")
        out["enqueue_raw"] = await timed_enqueue(
            cfg.tasks, publisher.publish_many(cfg.tasks), cfg.timeout_s
        )
        await expect_depth(probe, names.raw_queue, cfg.tasks)
        argv = raw_consumer_argv(cfg.url, names, loop)
        procs = [children.spawn(argv, child_env({}), f"raw-{loop}") for _ in range(2)]
        try:
            say(f"[{loop}] raw: drain with {CONSUMER_PROCESSES} processes")
            out["drain_raw"] = await measure_drain(
                probe, names.raw_queue, children, procs, cfg.timeout_s
            )
            completions: dict[str, float] = {}
            replies = await subscribe_replies(await observer.channel(), completions)
            say(f"[{loop}] raw: latency at {cfg.latency_rate:g}/s")

            async def send(i: int) -> str:
                return await publisher.publish(i, reply_to=replies.name)

            out["latency_raw"] = await paced_latency(
                send, completions, cfg.latency_rate, cfg.latency_seconds
            )
        finally:
            await children.stop(procs)


async def conveyor_drain(
    cfg: Config, loop: LoopName, children: Children, probe: QueueProbe, events: bool
) -> tuple[DrainResult, list[Any]]:
    """Start 2 `python -m consumer` processes on the pre-filled queue and measure the drain.

    Returns the still-running processes too, so the latency test can reuse them.
    """
    env = consumer_env(cfg.url, cfg.names, cfg.queue_type, loop, events)
    label = f"conveyor-{loop}-events-{'on' if events else 'off'}"
    procs = [children.spawn(CONSUMER_ARGV, env, label) for _ in range(CONSUMER_PROCESSES)]
    try:
        say(f"[{loop}] Conveyor: drain, events={'on' if events else 'off'}")
        result = await measure_drain(
            probe, cfg.names.conveyor_queue, children, procs, cfg.timeout_s
        )
        dead, _ = await probe.counts(f"{cfg.names.namespace}.dead")
        if dead:
            raise RuntimeError(f"Conveyor dead-lettered {dead} bench tasks: numbers are invalid")
    except BaseException:
        await children.stop(procs)
        raise
    return result, procs


async def run_conveyor(
    cfg: Config, loop: LoopName, children: Children, observer: AbstractConnection, out: Results
) -> None:
    """Conveyor: enqueue N, drain (events off), refill, drain (events on), then latency."""
    names, probe = cfg.names, QueueProbe(observer)
    settings = producer_settings(cfg.url, names, cfg.queue_type)
    async with submitter_for(settings) as submitter:
        items = submissions(cfg.tasks)
        say(f"[{loop}] Conveyor: enqueue {cfg.tasks} tasks (one submit_many call)")
        out["enqueue_conveyor"] = await timed_enqueue(
            cfg.tasks, submitter.submit_many(items), cfg.timeout_s
        )
        await expect_depth(probe, names.conveyor_queue, cfg.tasks)
        out["drain_conveyor"], procs = await conveyor_drain(cfg, loop, children, probe, False)
        await children.stop(procs)

        items = submissions(cfg.tasks)
        say(f"[{loop}] Conveyor: refill {cfg.tasks} tasks")
        out["enqueue_conveyor_refill"] = await timed_enqueue(
            cfg.tasks, submitter.submit_many(items), cfg.timeout_s
        )
        await expect_depth(probe, names.conveyor_queue, cfg.tasks)
        out["drain_conveyor_events"], procs = await conveyor_drain(cfg, loop, children, probe, True)
        try:
            completions: dict[str, float] = {}
            await subscribe_succeeded(await observer.channel(), names, completions)
            say(f"[{loop}] Conveyor: latency at {cfg.latency_rate:g}/s (Submitter.submit)")
            out["latency_conveyor"] = await paced_latency(
                latency_sender(submitter), completions, cfg.latency_rate, cfg.latency_seconds
            )
        finally:
            await children.stop(procs)


async def bench_loop(cfg: Config, loop: LoopName, children: Children, out: Results) -> None:
    """Every measurement for one event loop (bench process and consumers alike)."""
    async with asyncio.timeout(15):
        observer = await aio_pika.connect(cfg.url)
    async with observer:
        await run_raw(cfg, loop, children, observer, out)
        await run_conveyor(cfg, loop, children, observer, out)


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
            meta = {
                "namespace": cfg.names.namespace,
                "tasks": cfg.tasks,
                "queue_type": cfg.queue_type,
                "latency_rate_per_s": cfg.latency_rate,
                "latency_seconds": cfg.latency_seconds,
                "consumer_processes": CONSUMER_PROCESSES,
                "prefetch": 1,
                "confirm_window": CONFIRM_WINDOW,
                "complete": not failed,
            }
            plain = {
                loop: {key: asdict(value) for key, value in res.items()}
                for loop, res in results.items()
            }
            print_results(meta, plain)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
