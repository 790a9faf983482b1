"""The results table (one per event loop) with the issues' targets, and the JSON line."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

# Targets from the issues: Conveyor >= 85% of raw throughput (the drain with records on
# included), drain with the store on >= 85% of the same run with the store off; issue 12:
# latency with records on p50 within 2 ms and p99 within 5 ms of raw, consumer CPU per task
# with records on at most 1.2x raw's.
MIN_THROUGHPUT_RATIO = 0.85
MAX_P50_EXTRA_MS = 2.0
MAX_P99_EXTRA_MS = 5.0
MAX_CPU_RATIO = 1.2

Metrics = dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Row:
    """One comparison: where its baseline and measured values live, how the target is judged.

    The label says what is compared with what ("measured ÷ baseline").
    """

    label: str
    base: tuple[str, str]
    value: tuple[str, str]
    fmt: str
    target: Callable[[float, float], str] | None = None


def _throughput_target(base: float, value: float) -> str:
    ok = value >= MIN_THROUGHPUT_RATIO * base
    return f"≥{MIN_THROUGHPUT_RATIO:.0%} {'PASS' if ok else 'FAIL'}"


def _extra_ms_target(limit_ms: float) -> Callable[[float, float], str]:
    def target(base: float, value: float) -> str:
        extra = value - base
        return f"{extra:+.2f} ms (≤+{limit_ms:g}) {'PASS' if extra <= limit_ms else 'FAIL'}"

    return target


def _cpu_target(base: float, value: float) -> str:
    ok = value <= MAX_CPU_RATIO * base
    return f"≤{MAX_CPU_RATIO:g}x {'PASS' if ok else 'FAIL'}"


def _per_s(label: str, base: str, value: str, target: bool = True) -> Row:
    return Row(
        label, (base, "per_s"), (value, "per_s"), "{:,.0f}", _throughput_target if target else None
    )


def _cpu(
    label: str,
    base: str,
    value: str,
    field: str = "cpu_s_per_1k",
    target: Callable[[float, float], str] | None = None,
) -> Row:
    return Row(label, (base, field), (value, field), "{:.3f}", target)


ROWS = (
    _per_s("enqueue/s: Python API (submit_many) ÷ raw", "enqueue_raw", "enqueue_python"),
    _per_s("enqueue/s: HTTP batch ÷ Python API", "enqueue_python", "enqueue_http", False),
    _per_s("enqueue/s: HTTP batch ÷ raw", "enqueue_raw", "enqueue_http", False),
    _per_s("drain/s: store off (events off) ÷ raw", "drain_raw", "drain_store_off"),
    _per_s("drain/s: events on, queue empty ÷ raw", "drain_raw", "drain_store_on_emptied"),
    _per_s("drain/s: store on, all recorded ÷ store off", "drain_store_off", "drain_store_on"),
    _per_s("drain/s: store on, all recorded ÷ raw", "drain_raw", "drain_store_on"),
    _per_s(
        "drain/s: CONVEYOR_LOG_TASKS off ÷ on (store off)",
        "drain_store_off",
        "drain_log_tasks_off",
        False,
    ),
    _cpu(
        "consumer CPU s/1k: LOG_TASKS off ÷ on",
        "drain_store_off",
        "drain_log_tasks_off",
    ),
    Row(
        "latency p50 ms ÷ raw",
        ("latency_raw", "p50_ms"),
        ("latency_conveyor", "p50_ms"),
        "{:.2f}",
        _extra_ms_target(MAX_P50_EXTRA_MS),
    ),
    Row(
        "latency p99 ms ÷ raw",
        ("latency_raw", "p99_ms"),
        ("latency_conveyor", "p99_ms"),
        "{:.2f}",
        _extra_ms_target(MAX_P99_EXTRA_MS),
    ),
    Row(
        "latency max ms ÷ raw", ("latency_raw", "max_ms"), ("latency_conveyor", "max_ms"), "{:.2f}"
    ),
    _cpu("consumer CPU s/1k: store off ÷ raw", "drain_raw", "drain_store_off"),
    _cpu(
        "consumer CPU s/1k: store on ÷ raw",
        "drain_raw",
        "drain_store_on",
        target=_cpu_target,
    ),
    _cpu(
        "bench process CPU s/1k in drain: store on ÷ off",
        "drain_store_off",
        "drain_store_on",
        "host_cpu_s_per_1k",
    ),
    _cpu(
        "broker CPU s/1k in drain: store off ÷ raw",
        "drain_raw",
        "drain_store_off",
        "broker_cpu_s_per_1k",
    ),
    _cpu(
        "broker CPU s/1k in drain: store on ÷ raw",
        "drain_raw",
        "drain_store_on",
        "broker_cpu_s_per_1k",
    ),
    _cpu("publisher CPU s/1k: Python API ÷ raw", "enqueue_raw", "enqueue_python"),
    _cpu("publisher CPU s/1k: HTTP producer ÷ Python", "enqueue_python", "enqueue_http"),
)


def _value(metrics: Metrics, where: tuple[str, str]) -> float | None:
    value = (metrics.get(where[0]) or {}).get(where[1])
    return None if value is None else float(value)


def build_table(loop: str, meta: dict[str, Any], metrics: Metrics) -> Table:
    """The baseline / measured / ratio table of one event loop (missing values shown as -)."""
    table = Table(
        title=(
            f"Conveyor vs raw aio-pika — loop={loop}, {meta['queue_type']} queues, "
            f"store {meta['store']}, {meta['tasks']:,} tasks, "
            f"latency {meta['latency_rate_per_s']:g}/s for {meta['latency_seconds']:g}s"
        )
    )
    for column in ("metric: measured ÷ baseline", "baseline", "measured", "ratio", "target"):
        table.add_column(
            column, justify="right" if column in ("baseline", "measured", "ratio") else "left"
        )
    for row in ROWS:
        base, value = _value(metrics, row.base), _value(metrics, row.value)
        cells = [row.label, "-", "-", "-", ""]
        if base is not None:
            cells[1] = row.fmt.format(base)
        if value is not None:
            cells[2] = row.fmt.format(value)
        if base is not None and value is not None:
            cells[3] = f"{value / base:.2f}" if base else "-"
            cells[4] = row.target(base, value) if row.target else ""
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
