"""One task per call, Conveyor next to raw aio-pika in the same run: serial and N in flight.

    .venv/bin/python -m bench.single_submit [--tasks 5000] [--quick] [--rounds 3]
        [--store postgres|sqlite] [--loop uvloop|asyncio] [--in-flight 256] [--http]
        [--http-clients 64] [--http-producers 1]

`Submitter.submit` (through `open_submitter`, records in the store) against a raw confirmed
publish of one message per call, both on the run's loop, in alternating rounds (raw, Conveyor,
Conveyor, raw, ...) so a drift of the shared machine weighs on both. With --http, also
`POST /tasks` to a `python -m conveyor.producer` process from concurrent keep-alive clients
(bench/http_single.py). Nothing consumes: the queues are deleted at the end. Prints a table of
tasks/s and Conveyor ÷ raw per row, the load average, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/single_submit.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aio_pika

from bench.calls import Rate, Send, in_flight, pooled, serial
from bench.common import (
    DEFAULT_AMQP_URL,
    Children,
    LoopName,
    Names,
    StoreKind,
    check_loopback,
    run_on,
    say,
)
from bench.conveyor import producer_settings, submitter_for
from bench.database import DEFAULT_POSTGRES_URL, database_name, run_database
from bench.http_single import measure_http
from bench.raw import RawPublisher, declare_raw
from bench.run import cleanup_names
from conveyor.producer.submission.submitter import Submitter, TaskSubmission


def conveyor_send(submitter: Submitter) -> Send:
    async def send(i: int) -> object:
        return await submitter.submit(TaskSubmission(task="echo", payload={"i": i}))

    return send


def raw_send(publisher: RawPublisher) -> Send:
    return publisher.publish


@dataclass(frozen=True, slots=True)
class Options:
    url: str
    postgres_url: str
    store: StoreKind
    loop: LoopName
    tasks: int
    rounds: int
    callers: int
    http: bool
    http_clients: int
    http_producers: int
    http_env: dict[str, str]


async def measure(opts: Options, names: Names, children: Children) -> dict[str, Any]:
    """Every row, rounds alternating raw/Conveyor (ABBA), on one database of the run."""
    samples: dict[str, list[Rate]] = {}

    def keep(key: str, rate: Rate) -> None:
        samples.setdefault(key, []).append(rate)
        say(f"{key}: {rate.per_s:,.0f} tasks/s ({rate.cpu_s_per_1k:.3f} CPU s/1k)")

    name = database_name(names.namespace, opts.loop)
    async with run_database(opts.store, opts.postgres_url, name) as db:
        connection = await aio_pika.connect(opts.url)
        async with connection:
            channel = await connection.channel()
            await declare_raw(channel, names, "classic")
            raw = raw_send(await RawPublisher.open(connection, names))
            settings = producer_settings(opts.url, names, "classic", db)
            async with submitter_for(settings) as submitter:
                conveyor = conveyor_send(submitter)
                for _ in range(20):  # warm up both: connections, pools, caches
                    await raw(0)
                    await conveyor(0)
                serial_n = max(100, opts.tasks // 4)
                for round_ in range(opts.rounds):
                    pair = [("raw", raw), ("conveyor", conveyor)]
                    for side, send in pair if round_ % 2 == 0 else pair[::-1]:
                        keep(f"serial_{side}", await serial(send, serial_n))
                    for side, send in pair[::-1] if round_ % 2 == 0 else pair:
                        rate = await in_flight(send, opts.tasks, opts.callers)
                        keep(f"in_flight_{side}", rate)
                http_latency = (
                    await measure_http(opts, names, db, children, raw, keep, opts.http_env)
                    if opts.http
                    else {}
                )
    results = {key: summary(rates) for key, rates in samples.items()}
    if http_latency:
        results["http_conveyor"].update(http_latency)
    return results


def summary(rates: list[Rate]) -> dict[str, Any]:
    """Rounds pooled (total tasks over total time), each round's rate beside it."""
    total = pooled(rates)
    return asdict(total) | {
        "per_s": total.per_s,
        "cpu_s_per_1k": total.cpu_s_per_1k,
        "rounds_per_s": [round(r.per_s) for r in rates],
    }


ROWS = (
    ("one task per call, serial", "serial_raw", "serial_conveyor", 0.5),
    ("one task per call, {callers} in flight", "in_flight_raw", "in_flight_conveyor", 0.85),
    (
        "POST /tasks, {clients} keep-alive clients{producers} ÷ raw {callers} in flight",
        "in_flight_raw",
        "http_conveyor",
        0.5,
    ),
)


def print_table(opts: Options, results: dict[str, Any], load: tuple[float, float]) -> None:
    print(
        f"one task per call — loop={opts.loop}, store {opts.store}, classic durable queue, "
        f"confirms, {opts.rounds} round(s); load avg 1m {load[0]:.2f} → {load[1]:.2f}"
    )
    print(f"{'row':<58} {'raw/s':>8} {'conveyor/s':>11} {'ratio':>6}  target")
    for label, base, value, target in ROWS:
        if base not in results or value not in results:
            continue
        b, v = results[base]["per_s"], results[value]["per_s"]
        ratio = v / b
        verdict = "PASS" if ratio >= target else "FAIL"
        producers = f", {opts.http_producers} producers" if opts.http_producers > 1 else ""
        name = label.format(callers=opts.callers, clients=opts.http_clients, producers=producers)
        print(f"{name:<58} {b:>8,.0f} {v:>11,.0f} {ratio:>6.2f}  ≥{target} {verdict}")
    for key in ("http_conveyor",):
        if key in results and "p50_ms" in results[key]:
            r = results[key]
            print(f"  POST /tasks latency p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per in-flight round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="CI smoke: 1 round, 1,000 tasks")
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    parser.add_argument("--http", action="store_true", help="also POST /tasks over HTTP")
    parser.add_argument("--http-clients", type=int, default=64)
    parser.add_argument(
        "--http-producers",
        type=int,
        default=1,
        help="producer replicas (processes on one database) sharing the HTTP clients",
    )
    parser.add_argument(
        "--http-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the HTTP producer process, e.g. CONVEYOR_HTTP_PROTOCOL=h11",
    )
    parser.add_argument("--amqp-url", default=DEFAULT_AMQP_URL)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = Options(
        url=check_loopback(args.amqp_url),
        postgres_url=check_loopback(args.postgres_url),
        store=args.store,
        loop=args.loop,
        tasks=1000 if args.quick else args.tasks,
        rounds=1 if args.quick else args.rounds,
        callers=args.in_flight,
        http=args.http,
        http_clients=args.http_clients,
        http_producers=args.http_producers,
        http_env=dict(item.split("=", 1) for item in args.http_env),
    )
    names = Names(f"bench-{secrets.token_hex(4)}")
    children = Children(Path(tempfile.mkdtemp(prefix=f"{names.namespace}-")))
    load0 = os.getloadavg()[0]
    try:
        results = run_on(measure(opts, names, children), opts.loop)
    finally:
        children.kill_all()
        run_on(cleanup_names(args.amqp_url, names, args.store, args.postgres_url), "asyncio")
    load = (load0, os.getloadavg()[0])
    print_table(opts, results, load)
    meta = {"bench": "single-submit", **asdict(opts), "loadavg_1m": load}
    meta.pop("url"), meta.pop("postgres_url")
    print(json.dumps({**meta, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
