"""Every speed target of issue 12 in one command: one table, each row Conveyor ÷ raw of one run.

    .venv/bin/python -m bench.targets [--quick] [--store postgres|sqlite] [--backlog]

Runs `bench.single_submit --http` (one task per call: serial, 256 in flight, `POST /tasks`),
then `bench.run` (drain with records on, consumer CPU, latency), one after the other so they
never share the machine, and judges their JSON lines against the targets. `--backlog` adds
`bench.backlog` (a million queued and a million delayed tasks: many minutes; its own table).
`--quick` is the CI smoke: every bench in its quick mode, proving they run, never their speed.
Prints the table, the load average, and one JSON line of every row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
Figures = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target: what was compared, the two figures, the ratio (or difference) and the bar."""

    target: str
    raw: float
    conveyor: float
    measure: str  # "12.3x" or "+1.2 ms"
    met: bool


def judge(single: Figures, drains: Figures) -> list[Verdict]:
    """Issue 12's targets from `bench.single_submit`'s and `bench.run`'s results."""
    return [target.judge({"single": single, "drains": drains}) for target in TARGETS]


@dataclass(frozen=True, slots=True)
class Target:
    """One row: where raw's and Conveyor's figures are, and the bar between them."""

    label: str
    raw: tuple[str, str, str]  # (bench, row, field)
    conveyor: tuple[str, str, str]
    kind: str  # "at least" / "at most" a ratio of raw, or "extra ms" over raw
    bar: float

    def judge(self, results: dict[str, Figures]) -> Verdict:
        raw, conveyor = (results[b][row][field] for b, row, field in (self.raw, self.conveyor))
        if self.kind == "extra ms":
            return Verdict(
                self.label, raw, conveyor, f"{conveyor - raw:+.2f} ms", conveyor - raw <= self.bar
            )
        met = conveyor >= self.bar * raw if self.kind == "at least" else conveyor <= self.bar * raw
        return Verdict(self.label, raw, conveyor, f"{conveyor / raw:.2f}x", met)


def _single(row: str) -> tuple[str, str, str]:
    return ("single", row, "per_s")


TARGETS = (
    Target(
        "one task per call, serial ≥ 0.5x (tasks/s)",
        _single("serial_raw"),
        _single("serial_conveyor"),
        "at least",
        0.5,
    ),
    Target(
        "one task per call, 256 in flight ≥ 0.85x (tasks/s)",
        _single("in_flight_raw"),
        _single("in_flight_conveyor"),
        "at least",
        0.85,
    ),
    Target(
        "POST /tasks, 64 clients ≥ 0.5x raw in flight (tasks/s)",
        _single("in_flight_raw"),
        _single("http_conveyor"),
        "at least",
        0.5,
    ),
    Target(
        "drain with records on ≥ 0.85x (tasks/s)",
        ("drains", "drain_raw", "per_s"),
        ("drains", "drain_store_on", "per_s"),
        "at least",
        0.85,
    ),
    Target(
        "consumer CPU with records on ≤ 1.2x (ms/task)",
        ("drains", "drain_raw", "cpu_s_per_1k"),
        ("drains", "drain_store_on", "cpu_s_per_1k"),
        "at most",
        1.2,
    ),
    Target(
        "latency p50 at 200/s ≤ raw + 2 ms",
        ("drains", "latency_raw", "p50_ms"),
        ("drains", "latency_conveyor", "p50_ms"),
        "extra ms",
        2.0,
    ),
    Target(
        "latency p99 at 200/s ≤ raw + 5 ms",
        ("drains", "latency_raw", "p99_ms"),
        ("drains", "latency_conveyor", "p99_ms"),
        "extra ms",
        5.0,
    ),
)


def run_bench(module: str, args: list[str]) -> Figures:
    """Run `python -m module args`, its progress on our stderr; the results of its JSON line."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, stdout=subprocess.PIPE, check=False
    )
    output = proc.stdout.decode()
    sys.stderr.write(output)
    if proc.returncode != 0:
        raise SystemExit(f"{module} failed (exit {proc.returncode})")
    result: Figures = json.loads(output.strip().splitlines()[-1])["results"]
    return result


def print_table(verdicts: list[Verdict], load: tuple[float, float], quick: bool) -> None:
    note = " (--quick: a smoke run, not a measurement)" if quick else ""
    print(f"issue 12's targets, Conveyor vs raw aio-pika in the same runs{note}")
    print(f"load avg 1m {load[0]:.2f} → {load[1]:.2f}")
    print(f"{'target':<56} {'raw':>9} {'conveyor':>9} {'measure':>10}  met")
    for v in verdicts:
        met = "yes" if v.met else "no"
        print(f"{v.target:<56} {v.raw:>9,.2f} {v.conveyor:>9,.2f} {v.measure:>10}  {met}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.targets", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="CI smoke: every bench's --quick")
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--backlog", action="store_true", help="also bench.backlog (long)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quick = ["--quick"] if args.quick else []
    load0 = os.getloadavg()[0]
    single = run_bench("bench.single_submit", [*quick, "--http", "--store", args.store])
    drains = run_bench("bench.run", [*quick, "--store", args.store])
    if args.backlog:
        run_bench("bench.backlog", quick)  # prints its own table (PostgreSQL always)
    verdicts = judge(single, drains["uvloop"])
    load = (load0, os.getloadavg()[0])
    print_table(verdicts, load, args.quick)
    rows = [asdict(v) for v in verdicts]
    print(json.dumps({"bench": "issue-12-targets", "quick": args.quick, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
