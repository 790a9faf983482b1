"""The three measurements, independent of who publishes or consumes: enqueue, drain, latency.

Drain is measured from the broker's side (queue depth by passive declare), so consumer
process start-up never counts, and optionally until a `settled` check passes (the task store
shows every task done); latency is measured in the bench process only, so both timestamps
come from one clock.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import psutil
from aio_pika.abc import AbstractChannel, AbstractConnection

from bench.common import Children, say


@dataclass(frozen=True, slots=True)
class Throughput:
    """Tasks moved in a time window, and CPU seconds per 1,000 of them.

    Enqueue: wall time of the confirmed publishes; `cpu_s_per_1k` is the publishing process's
    CPU (the bench process, or the HTTP producer's). Drain: the queue depth fall (and the
    store catching up, when asked) while all consumers were attached; `cpu_s_per_1k` is the
    consumer processes' CPU. `host_cpu_s_per_1k` is always the bench process's own CPU: the
    in-process producer service (its Recorder during drains) plus the bench's polling.
    `broker_cpu_s_per_1k` (drains only): the RabbitMQ node's CPU, when it runs on this host
    and we may read its counters; None otherwise.
    """

    tasks: int
    seconds: float
    per_s: float
    cpu_s_per_1k: float
    host_cpu_s_per_1k: float
    broker_cpu_s_per_1k: float | None = None


def pooled(samples: Sequence[Throughput]) -> Throughput:
    """Several samples as one: total tasks over total time (ABBA rounds cancel drift)."""
    tasks = sum(s.tasks for s in samples)
    seconds = sum(s.seconds for s in samples)
    cpu = sum(s.cpu_s_per_1k * s.tasks / 1000 for s in samples)
    host = sum(s.host_cpu_s_per_1k * s.tasks / 1000 for s in samples)
    brokers = [s.broker_cpu_s_per_1k for s in samples]
    broker = (
        None
        if None in brokers
        else sum(b * s.tasks / 1000 for b, s in zip(brokers, samples, strict=True) if b is not None)
        / tasks
        * 1000
    )
    return Throughput(
        tasks, seconds, tasks / seconds, cpu / tasks * 1000, host / tasks * 1000, broker
    )


@dataclass(frozen=True, slots=True)
class Drain:
    """One drain: until the queue was empty, and until `settled` passed (None: not asked)."""

    emptied: Throughput
    settled: Throughput | None


@dataclass(frozen=True, slots=True)
class LatencyResult:
    """Publish-to-completion times of tasks sent at a steady rate (milliseconds)."""

    tasks: int
    rate_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float


async def timed_enqueue(
    tasks: int,
    publish: Awaitable[object],
    timeout_s: float,
    publishers: Sequence[subprocess.Popen[bytes]] = (),
) -> Throughput:
    """Await `publish` (N confirmed publishes) and measure wall and CPU time.

    The publishing CPU is that of `publishers` when given (a producer process serving HTTP),
    else the bench process's own.
    """
    host0, t0 = time.process_time(), time.perf_counter()
    cpu0 = cpu_seconds(publishers)
    async with asyncio.timeout(timeout_s):
        await publish
    seconds = time.perf_counter() - t0
    host = time.process_time() - host0
    cpu = cpu_seconds(publishers) - cpu0 if publishers else host
    return Throughput(tasks, seconds, tasks / seconds, cpu / tasks * 1000, host / tasks * 1000)


class QueueProbe:
    """Queue depth and consumer count by passive declare, on a channel of its own.

    A failed passive declare closes its channel, so the probe reopens one when needed.
    """

    def __init__(self, connection: AbstractConnection) -> None:
        self._connection = connection
        self._channel: AbstractChannel | None = None

    async def counts(self, queue: str, timeout_s: float = 5.0) -> tuple[int, int]:
        """(ready messages, consumers) of `queue`."""
        async with asyncio.timeout(timeout_s):
            if self._channel is None or self._channel.is_closed:
                self._channel = await self._connection.channel()
            declared = await self._channel.declare_queue(queue, passive=True)
        result = declared.declaration_result
        return result.message_count or 0, result.consumer_count or 0

    async def wait_consumers(
        self,
        queue: str,
        count: int,
        children: Children,
        procs: Sequence[subprocess.Popen[bytes]],
        timeout_s: float = 60.0,
    ) -> None:
        """Wait until `count` consumers are attached to `queue` (the processes started)."""
        async with asyncio.timeout(timeout_s):
            while (await self.counts(queue))[1] < count:
                children.check_alive(procs)
                await asyncio.sleep(0.02)


def broker_cpu_seconds() -> float | None:
    """CPU seconds of the local RabbitMQ node (its Erlang VM, beam.smp) so far; None if none
    is visible here. With several nodes on the host (the chaos tests' own), the busiest."""
    seen: list[float] = []
    for proc in psutil.process_iter(["name", "cpu_times"]):
        if proc.info["name"] == "beam.smp" and proc.info["cpu_times"] is not None:
            seen.append(proc.info["cpu_times"].user + proc.info["cpu_times"].system)
    return max(seen) if seen else None


def cpu_seconds(procs: Sequence[subprocess.Popen[bytes]]) -> float:
    """User + system CPU seconds the processes used so far (0 for none)."""
    total = 0.0
    for proc in procs:
        times = psutil.Process(proc.pid).cpu_times()
        total += times.user + times.system
    return total


@dataclass(frozen=True, slots=True)
class _Mark:
    """Clock and CPU counters at one instant of a drain."""

    at: float
    cpu_s: float
    host_cpu_s: float
    broker_cpu_s: float | None

    @classmethod
    def now(cls, procs: Sequence[subprocess.Popen[bytes]]) -> _Mark:
        return cls(
            time.perf_counter(), cpu_seconds(procs), time.process_time(), broker_cpu_seconds()
        )

    def since(self, start: _Mark, tasks: int) -> Throughput:
        seconds = self.at - start.at
        broker = (
            None
            if self.broker_cpu_s is None or start.broker_cpu_s is None
            else (self.broker_cpu_s - start.broker_cpu_s) / tasks * 1000
        )
        return Throughput(
            tasks,
            seconds,
            tasks / seconds,
            (self.cpu_s - start.cpu_s) / tasks * 1000,
            (self.host_cpu_s - start.host_cpu_s) / tasks * 1000,
            broker,
        )


async def measure_drain(
    probe: QueueProbe,
    queue: str,
    children: Children,
    procs: Sequence[subprocess.Popen[bytes]],
    timeout_s: float,
    settled: Callable[[], Awaitable[bool]] | None = None,
    interval_s: float = 0.005,
    settle_interval_s: float = 0.01,
) -> Drain:
    """Poll the depth of a pre-filled `queue` while `procs` consume it.

    The clock (and the CPU baselines) starts at the first poll that sees all consumers
    attached and stops at the first poll that sees 0 ready messages: start-up and
    connection set-up of the processes are outside the window. With `settled`, a second
    clock stops at the first later check that returns True; it is checked only once the
    queue is empty, so its cost (a database query) does not slow the drain itself.
    """
    start: tuple[_Mark, int] | None = None
    async with asyncio.timeout(timeout_s):
        while True:
            children.check_alive(procs)
            messages, consumers = await probe.counts(queue)
            if start is None and consumers >= len(procs):
                if messages == 0:
                    raise RuntimeError(f"{queue} was empty once all consumers were attached")
                start = (_Mark.now(procs), messages)
            elif start is not None and messages == 0:
                emptied = _Mark.now(procs)
                break
            await asyncio.sleep(interval_s)
        mark, drained = start
        if settled is None:
            return Drain(emptied.since(mark, drained), None)
        while not await settled():
            children.check_alive(procs)
            await asyncio.sleep(settle_interval_s)
        done = _Mark.now(procs)
    return Drain(emptied.since(mark, drained), done.since(mark, drained))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation, so p99 is a latency that happened)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


Send = Callable[[int], Awaitable[str]]


@dataclass(slots=True)
class LatencySide:
    """One side of the latency test: how to send task i, and what arrived when."""

    send: Send
    completions: dict[str, float] = field(default_factory=dict)
    sent: dict[str, float] = field(default_factory=dict)

    def result(self, rate_per_s: float) -> LatencyResult:
        latencies = [(self.completions[key] - at) * 1000 for key, at in self.sent.items()]
        return LatencyResult(
            len(latencies),
            rate_per_s,
            percentile(latencies, 50),
            percentile(latencies, 99),
            max(latencies),
        )


async def paced_block(side: LatencySide, rate_per_s: float, tasks: int, timeout_s: float) -> None:
    """Send `tasks` tasks at a steady rate, then wait until all of them completed.

    Send times are taken just before each publish; ids are matched after the fact, so a
    completion may arrive before its publish was confirmed.
    """
    sent: dict[str, float] = {}
    pending: list[asyncio.Task[None]] = []

    async def send_one(i: int) -> None:
        at = time.perf_counter()
        sent[await side.send(i)] = at

    try:
        async with asyncio.timeout(tasks / rate_per_s + timeout_s):
            t0 = time.perf_counter()
            for i in range(tasks):
                delay = t0 + i / rate_per_s - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                pending.append(asyncio.create_task(send_one(i)))
            await asyncio.gather(*pending)
            while not side.completions.keys() >= sent.keys():
                await asyncio.sleep(0.005)
    except TimeoutError:
        missing = len(sent.keys() - side.completions.keys())
        say(f"latency: {missing} of {tasks} tasks had no completion before the deadline")
        raise
    finally:
        for task in pending:
            task.cancel()
    side.sent.update(sent)


async def alternating_latency(
    sides: dict[str, LatencySide],
    rate_per_s: float,
    seconds: float,
    block_s: float = 1.0,
    timeout_s: float = 30.0,
) -> dict[str, LatencyResult]:
    """`seconds` of steady-rate sends per side, in alternating blocks of `block_s`.

    Alternating keeps both sides under the same background load on a shared machine;
    each block waits for its completions, so the sides never overlap.
    """
    per_block = max(1, round(rate_per_s * block_s))
    blocks = max(1, round(rate_per_s * seconds / per_block))
    for _ in range(blocks):
        for side in sides.values():
            await paced_block(side, rate_per_s, per_block, timeout_s)
    return {name: side.result(rate_per_s) for name, side in sides.items()}
