"""Conveyor vs a minimal raw aio-pika pair, in one run with identical broker settings.

    .venv/bin/python -m bench.run [--tasks 10000] [--quick] [--loop asyncio|uvloop|both]
                                  [--store sqlite|postgres] [--http-concurrency 1] [--log-tasks]

Persistent messages, publisher confirms (256 outstanding), durable queues of the same type
and arguments, prefetch=1, manual acks, 2 consumer processes, a no-op task. Measures enqueue
(raw, Python API, HTTP batch endpoint) and drain throughput (raw, store off, store on),
end-to-end latency at a steady rate and CPU per 1,000 tasks; prints a table per event loop
and one JSON line of everything at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import secrets
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as `python bench/run.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aio_pika

from bench.common import (
    CONFIRM_WINDOW,
    CONSUMER_PROCESSES,
    DEFAULT_AMQP_URL,
    Children,
    Config,
    LoopName,
    Names,
    check_loopback,
    run_on,
    say,
)
from bench.database import DEFAULT_POSTGRES_URL, database_name, drop_postgres, run_database
from bench.http_producer import BATCH_SIZE, DEFAULT_CONCURRENCY
from bench.report import print_results
from bench.steps import Bench, Results
from conveyor.config import redact_url

LOOPS: tuple[LoopName, ...] = ("asyncio", "uvloop")


async def bench_loop(cfg: Config, loop: LoopName, children: Children, out: Results) -> None:
    """Every measurement for one event loop (bench process and consumers alike).

    The loop gets its own database, removed when it is done.
    """
    name = database_name(cfg.names.namespace, loop)
    async with run_database(cfg.store, cfg.postgres_url, name) as database_url:
        say(f"[{loop}] task store: {cfg.store} ({redact_url(database_url)})")
        async with asyncio.timeout(15):
            observer = await aio_pika.connect(cfg.url)
        async with observer:
            await Bench(cfg, loop, children, observer, database_url, out).run()


async def cleanup(cfg: Config) -> None:
    """Delete what the run created on the shared broker and PostgreSQL server."""
    await cleanup_names(cfg.url, cfg.names, cfg.store, cfg.postgres_url)


async def cleanup_names(url: str, names: Names, store: str, postgres_url: str) -> None:
    """Delete every queue and exchange of the run's namespace (the broker is shared), and
    any PostgreSQL database of the run still there (normally each loop dropped its own)."""
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
    if store == "postgres":
        for loop in LOOPS:
            try:
                await drop_postgres(postgres_url, database_name(names.namespace, loop))
            except Exception as error:
                say(f"cleanup: could not drop the {loop} database: {error!r}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--tasks",
        type=int,
        default=10_000,
        help="tasks per enqueue/drain (each kind runs twice: 20,000 per row)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="CI smoke: 1,000 tasks a sample, 2 s of latency"
    )
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
    parser.add_argument(
        "--store",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="task store: a SQLite file in a temporary directory, or a bench_* PostgreSQL "
        "database created and dropped by the run",
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help="an existing database on the PostgreSQL server (loopback only), used to create "
        "and drop the run's own",
    )
    parser.add_argument(
        "--http-concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"POST /tasks/batch requests ({BATCH_SIZE} tasks each) in flight at once",
    )
    parser.add_argument(
        "--log-tasks",
        action="store_true",
        help="measure only the cost of the per-task log lines: store-off drains with "
        "CONVEYOR_LOG_TASKS on, off, off, on",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.latency_seconds = 1000, 2.0
    if args.tasks < 100 or args.latency_rate <= 0 or args.latency_seconds <= 0:
        parser.error("--tasks must be >= 100, rate and seconds > 0")
    if args.http_concurrency < 1:
        parser.error("--http-concurrency must be >= 1")
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
        store=args.store,
        postgres_url=check_loopback(args.postgres_url),
        http_concurrency=args.http_concurrency,
        log_tasks_only=args.log_tasks,
    )
    loops: list[LoopName] = list(LOOPS) if args.loop == "both" else [args.loop]
    log_dir = Path(tempfile.mkdtemp(prefix=f"{cfg.names.namespace}-"))
    children = Children(log_dir)
    atexit.register(children.kill_all)
    signal.signal(signal.SIGTERM, _terminate)
    say(f"namespace {cfg.names.namespace}, child logs in {log_dir}")
    results: dict[str, Results] = {}
    load_at_start = os.getloadavg()[0]
    failed = True
    try:
        for loop in loops:
            results[loop] = {}
            run_on(bench_loop(cfg, loop, children, results[loop]), loop)
        failed = False
    finally:
        children.kill_all()
        try:
            run_on(cleanup(cfg), "asyncio")
        finally:
            print_results(meta(cfg, not failed, load_at_start), results)
            if not failed:
                shutil.rmtree(log_dir, ignore_errors=True)
    return 0


def meta(cfg: Config, complete: bool, load_at_start: float) -> dict[str, Any]:
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
        "store": cfg.store,
        "python_enqueue": "one Submitter.submit_many call per N tasks",
        "http_enqueue": f"POST /tasks/batch, {BATCH_SIZE} tasks each, "
        f"{cfg.http_concurrency} in flight, to a `python -m conveyor.producer` process",
        "store_off": "consumers with CONVEYOR_EVENTS=false (nothing recorded after submission)",
        "store_on": "consumers with CONVEYOR_EVENTS=true, the in-process Recorder applies "
        "the events; drain ends when the store counts every task succeeded",
        "conveyor_latency_publisher": "Submitter.submit",
        "raw_latency_publisher": "raw aio-pika publisher with confirms",
        "order": "enqueue python; drain store off with CONVEYOR_LOG_TASKS on, off, off, on"
        if cfg.log_tasks_only
        else "enqueue raw,python; drain raw,store on; enqueue http; drain store off; "
        "enqueue http; drain store off; enqueue python,raw; drain store on,raw; "
        "latency alternating 1 s blocks",
        "complete": complete,
        # The machine is shared: how busy it was (at start, at end) tells how far to trust it.
        "loadavg_1m": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
    }


if __name__ == "__main__":
    sys.exit(main())
