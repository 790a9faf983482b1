"""The scaling run's outputs: a table, a section of docs/benchmarks.md, a PNG plot.

The plot uses matplotlib (the `bench` extra) when installed; without it, a small pure-Python
PNG writer draws the same lines (no text): the bench works on a bare test install too.
"""

from __future__ import annotations

import itertools
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SECTION = "## Scaling with consumers"


@dataclass(frozen=True, slots=True)
class Point:
    kind: str
    consumers: int
    tasks: int
    seconds: float
    per_s: float
    ideal_per_s: float

    @property
    def efficiency(self) -> float:
        return self.per_s / self.ideal_per_s


def render_table(points: list[Point]) -> str:
    """A Markdown table: one row per kind and consumer count."""
    lines = [
        "| task | consumers | tasks/s | ideal n x 1/task time | of ideal | tasks measured |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        lines.append(
            f"| {p.kind} | {p.consumers} | {p.per_s:,.0f} | {p.ideal_per_s:,.0f} | "
            f"{p.efficiency:.0%} | {p.tasks} |"
        )
    return "\n".join(lines)


def analysis(points: list[Point], cores: int) -> str:
    """Where each kind stops scaling, in words, from the measured points."""
    lines = []
    for kind in dict.fromkeys(p.kind for p in points):
        mine = [p for p in points if p.kind == kind]
        best = max(mine, key=lambda p: p.per_s)
        last = mine[-1]
        if best is last:
            lines.append(
                f"- **{kind}**: still growing at {last.consumers} consumers "
                f"({last.per_s:,.0f}/s, {last.efficiency:.0%} of ideal): the consumers mostly "
                "wait, so processes add up until the broker's and the consumers' own CPU per "
                "task (ack, status events, the next delivery) fills the cores."
            )
        else:
            lines.append(
                f"- **{kind}**: stops scaling at {best.consumers} consumers "
                f"({best.per_s:,.0f}/s; {last.per_s:,.0f}/s with {last.consumers}): the work "
                f"itself needs a core, and this machine has {cores}, shared with the broker, "
                "the consumers' event loops and the task's child process hand-off; beyond "
                "the cores more processes only add context switches."
            )
    return "\n".join(lines)


def write_markdown(path: Path, points: list[Point], meta: dict[str, Any]) -> None:
    """Put the table into `path` under SECTION, replacing that section only (other sections
    of the file are someone else's); creates the file if missing."""
    body = (
        f"{SECTION}\n\n"
        "`python -m bench.scaling` (prefetch 1, one task slot per consumer process, "
        f"{meta['cores']} cores, load average {meta['loadavg_1m'][0]} at start, "
        f"{meta['loadavg_1m'][1]} at the end). Throughput counts the tasks that succeeded "
        "once every consumer was attached, until the last one; the queue was filled before.\n\n"
        f"{render_table(points)}\n\n"
        "![throughput against consumer processes](scaling.png)\n\n"
        f"{meta.get('analysis') or analysis(points, int(meta['cores']))}".rstrip()
        + "\n"
    )
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: body + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + body
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_plot(path: Path, points: list[Point]) -> Path:
    """Throughput and the ideal line against consumers, one panel per task kind."""
    try:
        import matplotlib
    except ImportError:
        _write_plain_png(path, points)
        return path
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(p.kind for p in points))
    figure, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), squeeze=False)
    for axis, kind in zip(axes[0], kinds, strict=True):
        mine = [p for p in points if p.kind == kind]
        counts = [p.consumers for p in mine]
        axis.plot(counts, [p.ideal_per_s for p in mine], "--", color="grey", label="ideal")
        axis.plot(counts, [p.per_s for p in mine], "o-", label="measured")
        axis.set_title(kind)
        axis.set_xlabel("consumer processes (prefetch 1)")
        axis.set_ylabel("tasks/s")
        axis.set_xticks(counts)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _write_plain_png(path: Path, points: list[Point], width: int = 400, height: int = 300) -> None:
    """Lines only (measured blue, ideal grey), each kind in a panel, as an 8-bit RGB PNG."""
    kinds = list(dict.fromkeys(p.kind for p in points))
    panel = width // max(1, len(kinds))
    pixels = [[(255, 255, 255)] * width for _ in range(height)]

    def line(x0: float, y0: float, x1: float, y1: float, color: tuple[int, int, int]) -> None:
        steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        for i in range(steps + 1):
            x, y = x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps
            if 0 <= int(y) < height and 0 <= int(x) < width:
                pixels[int(y)][int(x)] = color

    for index, kind in enumerate(kinds):
        mine = [p for p in points if p.kind == kind]
        top = max(max(p.ideal_per_s, p.per_s) for p in mine)
        most = max(p.consumers for p in mine)
        left, margin = index * panel + 10, 10

        def at(count: int, rate: float) -> tuple[float, float]:
            return (
                left + (panel - 2 * margin) * count / most,  # noqa: B023
                height - margin - (height - 2 * margin) * rate / top,  # noqa: B023
            )

        line(*at(0, 0), *at(most, 0), (0, 0, 0))
        line(*at(0, 0), *at(0, top), (0, 0, 0))
        for series, color in (("ideal_per_s", (160, 160, 160)), ("per_s", (31, 119, 180))):
            for a, b in itertools.pairwise(mine):
                line(
                    *at(a.consumers, getattr(a, series)),
                    *at(b.consumers, getattr(b, series)),
                    color,
                )
    raw = b"".join(b"\x00" + bytes(c for px in row for c in px) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
    path.write_bytes(png + chunk(b"IEND", b""))
