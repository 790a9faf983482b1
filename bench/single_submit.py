"""Cost of one `Submitter.submit` at a time (the HTTP API's single-task path, minus HTTP).

    .venv/bin/python -m bench.single_submit [--tasks 500] [--profile] [--mark-linger-s S]

Sequential submissions of a no-op task into a fresh namespace and SQLite store on the local
RabbitMQ; prints wall and producer CPU milliseconds per submission (and, with --profile, the
top of a cProfile by cumulative time). Nothing consumes the tasks: the queue is deleted at
the end. --mark-linger-s replaces how long published marks gather (producer/outbox.py), to
compare settings in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import secrets
import tempfile
import time

from conveyor.config import ProducerSettings
from conveyor.producer import outbox
from conveyor.producer.service import open_submitter
from conveyor.producer.submission import TaskSubmission
from conveyor.shared.connection import connect_plain
from conveyor.shared.topology import Topology

WARM_UP = 50


async def measure(tasks: int, profile: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as store_dir:
        settings = ProducerSettings(
            namespace=f"bench-submit-{secrets.token_hex(3)}",
            database_url=f"sqlite:///{store_dir}/tasks.db",
        )
        submission = TaskSubmission(task="echo", payload={"n": 1})
        async with open_submitter(settings) as submitter:
            for _ in range(WARM_UP):
                await submitter.submit(submission)
            profiler = cProfile.Profile()
            wall, cpu = time.perf_counter(), time.process_time()
            if profile:
                profiler.enable()
            for _ in range(tasks):
                await submitter.submit(submission)
            profiler.disable()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"{tasks} sequential submissions: {1000 * wall / tasks:.2f} ms wall, "
            f"{1000 * cpu / tasks:.2f} ms producer CPU each"
        )
        if profile:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        await _delete_queues(settings)


async def _delete_queues(settings: ProducerSettings) -> None:
    topology = Topology.of(settings)
    connection = await connect_plain(settings, "bench single submit")
    async with connection:
        channel = await connection.channel()
        for queue in settings.queues:
            await channel.queue_delete(topology.work_queue(queue))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary")
    parser.add_argument("--mark-linger-s", type=float, help="override outbox.LINGER_S")
    args = parser.parse_args()
    if args.mark_linger_s is not None:
        outbox.LINGER_S = args.mark_linger_s
        print(f"published marks gather for {args.mark_linger_s:g} s")
    asyncio.run(measure(args.tasks, args.profile))


if __name__ == "__main__":
    main()
