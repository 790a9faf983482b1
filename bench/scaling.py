"""How throughput grows with consumer processes: 1, 2, 4, 8 consumers (prefetch 1, one slot
each) on a task that waits 20 ms on I/O (`sleep`) and on a 5 ms CPU-bound task (`cpu`, which
runs in a child process), against the ideal line n x 1/task time.

    .venv/bin/python -m bench.scaling [--quick] [--counts 1,2,4,8] [--no-write]

For each kind and count: the queue is filled first (no consumer attached), the consumers
start, and the clock starts once all of them are attached; throughput is the tasks that
succeeded from then until the last one did (from the `succeeded` status events, as the bench
process receives them). Prints the table and one JSON line; writes the section "Scaling with
consumers" of docs/benchmarks.md and docs/scaling.png (unless --no-write or --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/scaling.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aio_pika
from pydantic import SecretStr

from bench.common import (
    DEFAULT_AMQP_URL,
    ROOT,
    Children,
    Names,
    check_loopback,
    child_env,
    run_on,
    say,
)
from bench.measure import QueueProbe
from bench.scaling_report import Point, render_table, write_markdown, write_plot
from conveyor.config import ProducerSettings
from conveyor.producer.service import open_submitter
from conveyor.producer.submission.submitter import TaskSubmission
from conveyor.shared.events import EVENTS_ROUTING_KEY, decode_events
from conveyor.shared.records import TaskStatus

CONSUMER_ARGV = [sys.executable, "-m", "conveyor.consumer"]
QUEUE = "default"


@dataclass(frozen=True, slots=True)
class Kind:
    """A task to scale on: its name, payload and how long one run should take."""

    label: str
    task: str
    payload: dict[str, float]
    task_s: float
    cpu_bound: bool


KINDS = (
    Kind("I/O wait 20 ms", "sleep", {"seconds": 0.02}, 0.020, cpu_bound=False),
    Kind("CPU 5 ms", "cpu", {"ms": 5}, 0.005, cpu_bound=True),
)


@dataclass(frozen=True, slots=True)
class Plan:
    counts: tuple[int, ...]
    window_s: float  # seconds of work left once every consumer is attached, at best
    startup_s: float  # seconds of work the first consumers may do while others start
    url: str


def tasks_for(kind: Kind, count: int, plan: Plan) -> int:
    """Enough tasks that the measured window lasts about `plan.window_s`: the rate the
    consumers can reach (for CPU work, no more than the machine's cores) times the time."""
    reachable = count / kind.task_s
    if kind.cpu_bound:
        reachable = min(reachable, (os.cpu_count() or 1) / kind.task_s)
    return max(50, math.ceil(reachable * (plan.window_s + plan.startup_s)))


async def fill(names: Names, kind: Kind, tasks: int, database: Path, url: str) -> None:
    """Publish `tasks` runs of `kind` (confirmed) through the Python API, then stop the
    in-process producer so its recorder takes no CPU from the consumers while they run."""
    settings = ProducerSettings(
        amqp_url=SecretStr(url),
        namespace=names.namespace,
        queues=[QUEUE],
        database_url=SecretStr(f"sqlite:///{database}"),
    )
    items = [TaskSubmission(task=kind.task, payload=kind.payload) for _ in range(tasks)]
    async with asyncio.timeout(120), open_submitter(settings) as submitter:
        for start in range(0, tasks, 1000):
            await submitter.submit_many(items[start : start + 1000])


def consumer_env(names: Names, url: str, health_file: Path) -> dict[str, str]:
    return child_env(
        {
            "CONVEYOR_AMQP_URL": url,
            "CONVEYOR_NAMESPACE": names.namespace,
            "CONVEYOR_QUEUES": QUEUE,
            "CONVEYOR_CONCURRENCY": "1",
            "CONVEYOR_PREFETCH": "1",
            "CONVEYOR_LOG_LEVEL": "WARNING",
            "CONVEYOR_SHUTDOWN_GRACE_S": "5",
            "CONVEYOR_METRICS_PORT": "0",
            "CONVEYOR_HEALTH_FILE": str(health_file),
        }
    )


async def measure(
    kind: Kind, count: int, plan: Plan, names: Names, children: Children, work: Path
) -> Point:
    """One point of the curve: `count` consumers draining a pre-filled queue of `kind`."""
    tasks = tasks_for(kind, count, plan)
    say(f"{kind.label}, {count} consumer(s): filling the queue with {tasks} tasks")
    await fill(names, kind, tasks, work / f"{kind.task}-{count}.db", plan.url)
    done: list[float] = []
    connection = await aio_pika.connect(plan.url)
    async with connection:
        channel = await connection.channel()
        events = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await events.bind(names.conveyor.events_exchange, routing_key=EVENTS_ROUTING_KEY)

        async def on_event(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            at = time.perf_counter()
            done.extend(at for e in decode_events(message.body) if e.state is TaskStatus.SUCCEEDED)

        await events.consume(on_event, no_ack=True)
        env = consumer_env(names, plan.url, work / "alive")
        procs = [children.spawn(CONSUMER_ARGV, env, f"consumer-{count}") for _ in range(count)]
        probe = QueueProbe(connection)
        await probe.wait_consumers(names.conveyor_queue, count, children, procs, timeout_s=120)
        attached = time.perf_counter()
        before = len(done)
        deadline = attached + 60 + tasks * kind.task_s
        while len(done) < tasks:
            children.check_alive(procs)
            if time.perf_counter() > deadline:
                raise RuntimeError(f"only {len(done)} of {tasks} tasks succeeded in time")
            await asyncio.sleep(0.05)
        await children.stop(procs)
    measured = len(done) - before
    seconds = max(done) - attached
    say(f"  {measured} tasks in {seconds:.2f} s once all {count} were attached")
    return Point(
        kind=kind.label,
        consumers=count,
        tasks=measured,
        seconds=round(seconds, 3),
        per_s=round(measured / seconds, 1),
        ideal_per_s=round(count / kind.task_s, 1),
    )


async def cleanup(names: Names, url: str) -> None:
    """Delete the run's queues and exchanges (the broker is shared)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in names.queues():
            if channel.is_closed:
                channel = await connection.channel()
            await channel.queue_delete(name)
        for name in names.exchanges():
            await channel.exchange_delete(name)


async def run(plan: Plan, children: Children, work: Path) -> list[Point]:
    names = Names(f"bench-scaling-{secrets.token_hex(4)}")
    say(f"namespace {names.namespace}, child logs in {children.log_dir}")
    points = []
    try:
        for kind in KINDS:
            for count in plan.counts:
                points.append(await measure(kind, count, plan, names, children, work))
    finally:
        children.kill_all()
        await cleanup(names, plan.url)
    return points


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 and 2 consumers, short runs")
    parser.add_argument("--counts", default="1,2,4,8", help="consumer counts, comma-separated")
    parser.add_argument("--window-s", type=float, default=4.0)
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL, help="loopback brokers only")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the files go")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    counts = (1, 2) if args.quick else tuple(int(c) for c in args.counts.split(","))
    window_s = 0.5 if args.quick else args.window_s
    plan = Plan(counts, window_s, 1.0 if args.quick else 6.0, check_loopback(args.amqp_url))
    work = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    children = Children(work)
    atexit.register(children.kill_all)
    load_at_start = os.getloadavg()[0]
    points = run_on(run(plan, children, work), "asyncio")
    meta = {
        "cores": os.cpu_count(),
        "prefetch": 1,
        "concurrency": 1,
        "loadavg_1m": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
    }
    print(render_table(points))
    print(json.dumps({"scaling": [asdict(p) for p in points], **meta}))
    if args.quick:  # a smoke run: the plot is made (and shown where), docs stay as they are
        say(f"quick run: plot in {write_plot(work / 'scaling.png', points)}")
        return 0
    shutil.rmtree(work, ignore_errors=True)
    if not args.no_write:
        write_markdown(args.out / "benchmarks.md", points, meta)
        say(
            f"wrote {args.out / 'benchmarks.md'} and {write_plot(args.out / 'scaling.png', points)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
