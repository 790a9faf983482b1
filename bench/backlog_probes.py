"""What the backlog bench measures: resident memory of the service processes, and how long
the producer's read endpoints take to answer.

Memory is a process tree's RSS (the process and its children: a consumer's sync tasks run in
child processes), sampled several times and reported as the largest sample, so a brief peak
counts against the target. Latency is wall time of sequential requests from one keep-alive
client, after a warm-up request, so each figure is the endpoint's own time, not a queue's.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx
import psutil

MIB = 1024 * 1024
RSS_RATIO_TARGET = 1.10  # "within 10% of an idle service"
LATENCY_TARGET_MS = 200.0


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and all its descendants, in bytes (0 if it is gone)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue  # a child recycled between the listing and the read
    return total


async def sample_rss(
    pids: Mapping[str, int], samples: int = 5, every_s: float = 0.5
) -> dict[str, int]:
    """The largest RSS of each labelled process tree over `samples` reads `every_s` apart."""
    peaks = dict.fromkeys(pids, 0)
    for index in range(samples):
        for label, pid in pids.items():
            peaks[label] = max(peaks[label], tree_rss_bytes(pid))
        if index < samples - 1:
            await asyncio.sleep(every_s)
    return peaks


@dataclass(frozen=True, slots=True)
class Probe:
    """One row of the latency table: a label and the request path."""

    label: str
    path: str


@dataclass(frozen=True, slots=True)
class Timing:
    """Latencies of one probe's requests, milliseconds (the warm-up request's apart)."""

    requests: int
    p50_ms: float
    max_ms: float
    first_ms: float


async def time_requests(client: httpx.AsyncClient, path: str, requests: int) -> Timing:
    """GET `path` once to warm up, then `requests` times in turn; each must answer 200."""
    durations_ms: list[float] = []
    first_ms = 0.0
    for index in range(requests + 1):
        started = time.perf_counter()
        response = await client.get(path)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
        if index:
            durations_ms.append(elapsed_ms)
        else:  # the first one warms caches and connections (and counts the records)
            first_ms = elapsed_ms
    return Timing(
        requests=requests,
        p50_ms=round(statistics.median(durations_ms), 2),
        max_ms=round(max(durations_ms), 2),
        first_ms=round(first_ms, 2),
    )


async def time_probes(
    client: httpx.AsyncClient, probes: Sequence[Probe], requests: int
) -> dict[str, Timing]:
    """Every probe in turn, by label."""
    return {probe.label: await time_requests(client, probe.path, requests) for probe in probes}


def render_table(
    rss_idle: Mapping[str, int],
    rss_backlog: Mapping[str, int],
    idle: Mapping[str, Timing],
    backlog: Mapping[str, Timing],
    title: str,
) -> str:
    """The figures beside their targets, with PASS/FAIL per row (the bench never asserts)."""
    lines = [title]
    lines.append(f"{'row':<52} {'idle':>14} {'backlog':>16}  target")
    for label, idle_bytes in rss_idle.items():
        ratio = rss_backlog[label] / idle_bytes if idle_bytes else float("inf")
        verdict = "PASS" if ratio <= RSS_RATIO_TARGET else "FAIL"
        lines.append(
            f"{'RSS MiB, ' + label:<52} {idle_bytes / MIB:>14.1f} "
            f"{rss_backlog[label] / MIB:>9.1f} ({ratio:.2f}x)  "
            f"<= {RSS_RATIO_TARGET:.2f}x idle {verdict}"
        )
    for label, timing in backlog.items():
        before = idle.get(label)
        verdict = "PASS" if timing.max_ms <= LATENCY_TARGET_MS else "FAIL"
        before_text = f"{before.p50_ms:.1f} / {before.max_ms:.1f}" if before else "-"
        lines.append(
            f"{'ms p50 / max, ' + label:<52} {before_text:>14} "
            f"{f'{timing.p50_ms:.1f} / {timing.max_ms:.1f}':>16}  "
            f"max <= {LATENCY_TARGET_MS:.0f} ms {verdict}"
        )
    return "\n".join(lines)
