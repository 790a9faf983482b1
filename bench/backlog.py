"""The cost of a backlog: a million queued and a million delayed tasks against an idle service.

    .venv/bin/python -m bench.backlog [--quick] [--tasks 1000000] [--delayed N] [--consumers 2]

A real producer (`python -m conveyor.producer`, records in a PostgreSQL database of the run's
own, dropped at the end) and consumer processes (`python -m conveyor.consumer`, prefetch 1,
one slot each) start on a fresh namespace. Idle: a few tasks run through them, every probed
endpoint is requested once, then their resident memory is read. The backlog: the bench fills
the store through the Python API (`submit_many`, several batches in flight) with N delayed
`echo` tasks (30 days ahead: rows only) and N queued `sleep` tasks of one second each, so the
consumers stay attached to a queue of N ready messages and work through it at one task per
second each. With the backlog present the bench reads memory again and times the producer's
read endpoints: `GET /tasks` (first page, the next page, a page deep in the backlog, filtered
pages), `GET /stats`, `GET /queues` and every other call the dashboard makes, and `GET /`.

Prints a table (each figure beside its target, PASS/FAIL, never an assertion) and one JSON
line. `--quick` (2,000 + 2,000 tasks) is the CI smoke run; it proves the bench works, not speed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import secrets
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):  # run as `python bench/backlog.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aio_pika
import httpx

from bench.backlog_probes import (
    MIB,
    Probe,
    Timing,
    render_table,
    sample_rss,
    time_probes,
)
from bench.common import DEFAULT_AMQP_URL, Children, Names, check_loopback, run_on, say
from bench.conveyor import producer_settings, submitter_for
from bench.database import DEFAULT_POSTGRES_URL, database_name, drop_postgres, run_database
from bench.http_producer import HttpProducer, free_port, open_http_producer, producer_env
from bench.measure import QueueProbe
from bench.run import cleanup_names
from bench.scaling import CONSUMER_ARGV, consumer_env
from conveyor.producer.submission.submitter import Submitter, TaskSubmission

PRODUCER_ARGV = [sys.executable, "-m", "conveyor.producer"]
QUEUE_TYPE: Final = "quorum"  # the default work queue type
DELAY_S = 30 * 86_400.0  # far enough ahead that nothing comes due during the run
BACKLOG_TASK = TaskSubmission(task="sleep", payload={"seconds": 1.0})
WARM_UP_TASKS = 20
FILL_PUBLISH_TIMEOUT_S = 120.0
SETTLE_S = 6.0  # a little over one look of the producer's SystemWatch (every 5 s)


@dataclass(frozen=True, slots=True)
class Options:
    url: str
    postgres_url: str
    queued: int
    delayed: int
    consumers: int
    batch_size: int
    batches_in_flight: int
    requests: int


@dataclass(frozen=True, slots=True)
class Fill:
    """How one part of the backlog went in."""

    tasks: int
    seconds: float
    middle_id: str  # a task from the middle of this fill: the cursor of a deep page

    @property
    def per_s(self) -> float:
        return self.tasks / self.seconds if self.seconds else 0.0


async def fill(submitter: Submitter, tasks: int, delayed: bool, opts: Options) -> Fill:
    """Submit `tasks` through `submit_many`, `batches_in_flight` batches at once."""
    submission = (
        TaskSubmission(task="echo", payload={"backlog": True}, delay_s=DELAY_S)
        if delayed
        else BACKLOG_TASK
    )
    starts = iter(range(0, tasks, opts.batch_size))
    middle: list[str] = []
    done = 0
    started = time.perf_counter()

    async def submit_in_turn() -> None:
        nonlocal done
        for start in starts:  # one shared iterator: each batch is taken once
            size = min(opts.batch_size, tasks - start)
            records = await submitter.submit_many(list(itertools.repeat(submission, size)))
            if start <= tasks // 2 < start + size:
                middle.append(records[tasks // 2 - start].id)
            done += size
            if done % 100_000 < size:
                rate = done / (time.perf_counter() - started)
                say(f"  {done:,} {'delayed' if delayed else 'queued'} tasks ({rate:,.0f}/s)")

    await asyncio.gather(*(submit_in_turn() for _ in range(opts.batches_in_flight)))
    return Fill(tasks, round(time.perf_counter() - started, 2), middle[0])


def probes(first_cursor: str, deep_cursor: str) -> list[Probe]:
    """Every request the bench times: the list in its shapes, and the dashboard's calls."""
    return [
        Probe("GET /tasks (first page)", "/tasks"),
        Probe("GET /tasks?cursor= (next page)", f"/tasks?cursor={first_cursor}"),
        Probe("GET /tasks?cursor= (deep in the backlog)", f"/tasks?cursor={deep_cursor}"),
        Probe("GET /tasks?status=queued", "/tasks?status=queued"),
        Probe("GET /tasks?status=scheduled", "/tasks?status=scheduled"),
        Probe("GET /tasks?status=succeeded (few)", "/tasks?status=succeeded"),
        Probe("GET /tasks?task=echo", "/tasks?task=echo"),
        Probe("GET /tasks?status=queued&task=echo (none)", "/tasks?status=queued&task=echo"),
        Probe("GET /stats", "/stats"),
        Probe("GET /queues", "/queues"),
        Probe("GET / (dashboard page)", "/"),
        Probe("dashboard: GET /tasks?limit=50", "/tasks?limit=50"),
        Probe("dashboard: GET /workers", "/workers"),
        Probe("dashboard: GET /dead-letters?limit=50", "/dead-letters?limit=50"),
        Probe("dashboard: GET /schedules?limit=50", "/schedules?limit=50"),
    ]


async def counts(client: httpx.AsyncClient) -> dict[str, int]:
    """The producer's records per status (`GET /stats`)."""
    body: dict[str, Any] = (await client.get("/stats")).json()
    return {status: int(n) for status, n in body["counts"].items() if n}


async def warm_up(http: HttpProducer) -> list[str]:
    """Run a few short tasks through the producer's HTTP API and the consumers, so the idle
    figures are of services that have done work; returns their ids."""
    body = {"tasks": [{"task": "sleep", "payload": {"seconds": 0.01}}] * WARM_UP_TASKS}
    response = await http.client.post("/tasks/batch", json=body)
    if response.status_code != 202:
        raise RuntimeError(f"POST /tasks/batch answered {response.status_code}")
    async with asyncio.timeout(60):
        while (await counts(http.client)).get("succeeded", 0) < WARM_UP_TASKS:
            await asyncio.sleep(0.1)
    return [item["id"] for item in response.json()["items"]]


@dataclass(frozen=True, slots=True)
class Report:
    """The measured figures: what the table shows, and all of it for the JSON line."""

    rss_idle: dict[str, int]
    rss_backlog: dict[str, int]
    idle: dict[str, Timing]
    backlog: dict[str, Timing]
    figures: dict[str, Any]


async def measure(opts: Options, names: Names, children: Children) -> Report:
    """Idle figures, then the fill, then the same figures with the backlog present."""
    name = database_name(names.namespace, "backlog")
    async with run_database("postgres", opts.postgres_url, name) as db:
        port = free_port()
        env = producer_env(
            opts.url, names, QUEUE_TYPE, "uvloop", db, port, children.log_dir / "producer-alive"
        )
        env["CONVEYOR_LOG_LEVEL"] = "WARNING"
        async with open_http_producer(children, env, port, "producer", argv=PRODUCER_ARGV) as http:
            consumer_settings = consumer_env(names, opts.url, children.log_dir / "consumer-alive")
            consumers = [
                children.spawn(CONSUMER_ARGV, consumer_settings, "consumer")
                for _ in range(opts.consumers)
            ]
            connection = await aio_pika.connect(opts.url)
            async with connection:
                queue_probe = QueueProbe(connection)
                await queue_probe.wait_consumers(
                    names.conveyor_queue, opts.consumers, children, consumers, timeout_s=120
                )
                pids = {"producer": http.proc.pid} | {
                    f"consumer {index + 1}": proc.pid for index, proc in enumerate(consumers)
                }
                warm_ids = await warm_up(http)
                say("idle: timing every endpoint, then reading memory")
                idle = await time_probes(
                    http.client, probes(warm_ids[-1], warm_ids[0]), opts.requests
                )
                rss_idle = await sample_rss(pids)

                # A generous confirm deadline: the fill builds a backlog on a busy machine,
                # a 503 for a slow confirm would only end the run.
                settings = producer_settings(opts.url, names, QUEUE_TYPE, db).model_copy(
                    update={"publish_timeout_s": FILL_PUBLISH_TIMEOUT_S}
                )
                async with submitter_for(settings) as submitter:
                    say(f"filling: {opts.delayed:,} delayed tasks")
                    delayed = await fill(submitter, opts.delayed, True, opts)
                    say(f"filling: {opts.queued:,} queued tasks")
                    queued = await fill(submitter, opts.queued, False, opts)
                await asyncio.sleep(SETTLE_S)  # the producer's periodic looks see the backlog
                children.check_alive([http.proc, *consumers])
                ready, attached = await queue_probe.counts(names.conveyor_queue)
                say(f"backlog: {ready:,} ready messages, {attached} consumers; timing")
                first = (await http.client.get("/tasks")).json()["next_cursor"]
                rss_before = await sample_rss(pids)
                backlog = await time_probes(
                    http.client, probes(first, queued.middle_id), opts.requests
                )
                rss_after = await sample_rss(pids)
                store_counts = await counts(http.client)
            children.check_alive([http.proc, *consumers])
            await children.stop(consumers)
    rss_backlog = {label: max(rss_before[label], rss_after[label]) for label in pids}
    figures = {
        "fill": {"delayed": asdict(delayed), "queued": asdict(queued)},
        "fill_per_s": {"delayed": round(delayed.per_s), "queued": round(queued.per_s)},
        "ready_messages": ready,
        "store_counts": store_counts,
        "rss_mib": {
            "idle": {k: round(v / MIB, 1) for k, v in rss_idle.items()},
            "backlog": {k: round(v / MIB, 1) for k, v in rss_backlog.items()},
        },
        "latency_ms": {
            "idle": {k: asdict(v) for k, v in idle.items()},
            "backlog": {k: asdict(v) for k, v in backlog.items()},
        },
    }
    return Report(rss_idle, rss_backlog, idle, backlog, figures)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.backlog", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="CI smoke: 2,000 + 2,000 tasks")
    parser.add_argument("--tasks", type=int, default=1_000_000, help="queued tasks")
    parser.add_argument("--delayed", type=int, default=None, help="delayed tasks (= --tasks)")
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=4, help="submit_many calls at once")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per endpoint")
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL, help="loopback brokers only")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    queued = 2000 if args.quick else args.tasks
    opts = Options(
        url=check_loopback(args.amqp_url),
        postgres_url=check_loopback(args.postgres_url),
        queued=queued,
        delayed=queued if args.quick or args.delayed is None else args.delayed,
        consumers=args.consumers,
        batch_size=args.batch_size,
        batches_in_flight=args.in_flight,
        requests=args.requests,
    )
    names = Names(f"bench-{secrets.token_hex(4)}")
    children = Children(Path(tempfile.mkdtemp(prefix=f"{names.namespace}-")))
    say(f"namespace {names.namespace}, child logs in {children.log_dir}")
    load0 = os.getloadavg()
    try:
        report = run_on(measure(opts, names, children), "uvloop")
    finally:
        children.kill_all()
        run_on(cleanup_names(args.amqp_url, names, "postgres", args.postgres_url), "asyncio")
        # cleanup_names drops the other benches' databases; this one is named for the bench.
        run_on(
            drop_postgres(args.postgres_url, database_name(names.namespace, "backlog")), "asyncio"
        )
    load = (load0[0], os.getloadavg()[0])
    title = (
        f"backlog — {opts.queued:,} queued + {opts.delayed:,} delayed tasks, PostgreSQL, "
        f"{opts.consumers} consumers (prefetch 1); load avg 1m {load[0]:.2f} → {load[1]:.2f}"
    )
    print(render_table(report.rss_idle, report.rss_backlog, report.idle, report.backlog, title))
    print(f"store counts with the backlog: {report.figures['store_counts']}")
    meta = {"bench": "backlog", **asdict(opts), "loadavg_1m": load, "cores": os.cpu_count()}
    meta.pop("url"), meta.pop("postgres_url")
    print(json.dumps({**meta, "results": report.figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
