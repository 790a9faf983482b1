"""The results table (one per event loop) with the issue's targets, and the JSON line."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

# Targets from the issue: Conveyor >= 85% of raw throughput, p99 within 2 ms of raw.
MIN_THROUGHPUT_RATIO = 0.85
MAX_P99_EXTRA_MS = 2.0

Metrics = dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Row:
    """One metric: where its raw and Conveyor values live and how the target is judged."""

    label: str
    raw: tuple[str, str]
    conveyor: tuple[str, str]
    fmt: str
    target: Callable[[float, float], str] | None = None


def _throughput_target(raw: float, conveyor: float) -> str:
    ok = conveyor >= MIN_THROUGHPUT_RATIO * raw
    return f"≥{MIN_THROUGHPUT_RATIO:.0%} {'PASS' if ok else 'FAIL'}"


def _p99_target(raw: float, conveyor: float) -> str:
    extra = conveyor - raw
    ok = extra <= MAX_P99_EXTRA_MS
    return f"+{extra:.2f} ms (≤{MAX_P99_EXTRA_MS:g}) {'PASS' if ok else 'FAIL'}"


ROWS = (
    Row(
        "enqueue tasks/s (256 confirms in flight)",
        ("enqueue_raw", "per_s"),
        ("enqueue_conveyor", "per_s"),
        "{:,.0f}",
        _throughput_target,
    ),
    Row(
        "drain tasks/s, 2 procs (Conveyor events off)",
        ("drain_raw", "per_s"),
        ("drain_conveyor_events_off", "per_s"),
        "{:,.0f}",
        _throughput_target,
    ),
    Row(
        "drain tasks/s, 2 procs (Conveyor events on)",
        ("drain_raw", "per_s"),
        ("drain_conveyor_events_on", "per_s"),
        "{:,.0f}",
        _throughput_target,
    ),
    Row("latency p50 ms", ("latency_raw", "p50_ms"), ("latency_conveyor", "p50_ms"), "{:.2f}"),
    Row(
        "latency p99 ms",
        ("latency_raw", "p99_ms"),
        ("latency_conveyor", "p99_ms"),
        "{:.2f}",
        _p99_target,
    ),
    Row("latency max ms", ("latency_raw", "max_ms"), ("latency_conveyor", "max_ms"), "{:.2f}"),
    Row(
        "consumer CPU s/1k tasks (events off)",
        ("drain_raw", "cpu_s_per_1k"),
        ("drain_conveyor_events_off", "cpu_s_per_1k"),
        "{:.3f}",
    ),
    Row(
        "consumer CPU s/1k tasks (events on)",
        ("drain_raw", "cpu_s_per_1k"),
        ("drain_conveyor_events_on", "cpu_s_per_1k"),
        "{:.3f}",
    ),
    Row(
        "publisher CPU s/1k tasks (enqueue)",
        ("enqueue_raw", "cpu_s_per_1k"),
        ("enqueue_conveyor", "cpu_s_per_1k"),
        "{:.3f}",
    ),
)


def _value(metrics: Metrics, where: tuple[str, str]) -> float | None:
    section = metrics.get(where[0])
    return None if section is None else float(section[where[1]])


def build_table(loop: str, meta: dict[str, Any], metrics: Metrics) -> Table:
    """The raw / Conveyor / ratio table of one event loop (missing values shown as -)."""
    table = Table(
        title=(
            f"Conveyor vs raw aio-pika — loop={loop}, {meta['queue_type']} queues, "
            f"{meta['tasks']:,} tasks, latency {meta['latency_rate_per_s']:g}/s "
            f"for {meta['latency_seconds']:g}s"
        )
    )
    for column in ("metric", "raw", "Conveyor", "Conveyor÷raw", "target"):
        table.add_column(column, justify="left" if column in ("metric", "target") else "right")
    for row in ROWS:
        raw, conveyor = _value(metrics, row.raw), _value(metrics, row.conveyor)
        cells = [row.label, "-", "-", "-", ""]
        if raw is not None:
            cells[1] = row.fmt.format(raw)
        if conveyor is not None:
            cells[2] = row.fmt.format(conveyor)
        if raw is not None and conveyor is not None:
            cells[3] = f"{conveyor / raw:.2f}" if raw else "-"
            cells[4] = row.target(raw, conveyor) if row.target else ""
        table.add_row(*cells)
    return table


def print_results(meta: dict[str, Any], results: dict[str, dict[str, Any]]) -> None:
    """A table per loop on stdout, then one JSON line with every number (for the README)."""
    plain: dict[str, Metrics] = {
        loop: {key: asdict(value) for key, value in metrics.items()}
        for loop, metrics in results.items()
    }
    console = Console(width=120)
    for loop, metrics in plain.items():
        console.print(build_table(loop, meta, metrics))
    print(json.dumps({"bench": "conveyor-vs-raw", **meta, "results": plain}), flush=True)
