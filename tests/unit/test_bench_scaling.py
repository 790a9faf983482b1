"""The scaling bench's outputs: how many tasks a run needs, its table, its section of
docs/benchmarks.md (other sections kept), and a PNG with or without matplotlib."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest

from bench.scaling import KINDS, Plan, tasks_for
from bench.scaling_report import SECTION, Point, render_table, write_markdown, write_plot

POINTS = [
    Point("I/O wait 20 ms", 1, 500, 10.0, 45.0, 50.0),
    Point("I/O wait 20 ms", 2, 1000, 10.0, 90.0, 100.0),
    Point("CPU 5 ms", 1, 900, 5.0, 110.0, 200.0),
    Point("CPU 5 ms", 2, 1800, 5.0, 200.0, 400.0),
]
META = {"cores": 2, "loadavg_1m": [0.5, 1.5], "analysis": "It stops at 2 cores."}


def test_cpu_runs_are_sized_by_the_cores_not_the_ideal_line() -> None:
    plan = Plan((1, 8), window_s=4, startup_s=6, url="amqp://x/")
    io, cpu = KINDS
    assert tasks_for(io, 8, plan) == 8 * 50 * 10  # 400 tasks/s are reachable for 10 s
    assert tasks_for(cpu, 8, plan) <= tasks_for(cpu, 1, plan) * 8


def test_the_table_has_the_ideal_line_and_the_share_of_it() -> None:
    table = render_table(POINTS)
    assert "| I/O wait 20 ms | 2 | 90 | 100 | 90% | 1000 |" in table
    assert "| CPU 5 ms | 2 | 200 | 400 | 50% | 1800 |" in table


def test_the_section_is_added_then_replaced_and_other_sections_stay(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    write_markdown(path, POINTS, META)  # a new file
    assert path.read_text().startswith("# Benchmarks\n") and SECTION in path.read_text()
    path.write_text(path.read_text() + "\n## Someone else's section\n\nkeep me\n")
    write_markdown(path, POINTS[:2], {**META, "analysis": "second run"})
    text = path.read_text()
    assert text.count(SECTION) == 1 and "second run" in text and "CPU 5 ms" not in text
    assert "## Someone else's section\n\nkeep me" in text


def test_the_plot_is_a_png_without_matplotlib_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    plain = write_plot(tmp_path / "plain.png", POINTS)
    assert plain.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and plain.stat().st_size > 100


def test_the_plot_is_drawn_by_matplotlib_where_installed(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the `bench` extra is not installed")
    fancy = write_plot(tmp_path / "fancy.png", POINTS)
    assert fancy.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
