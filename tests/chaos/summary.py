"""The chaos run's summary table: one row per scenario, printed at the end of the run."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class ChaosRow:
    """What one scenario did and what came of it (filled in before its assertions run, so a
    failing scenario still shows its numbers)."""

    scenario: str
    tasks: int = 0  # accepted: 202, the broker confirmed them
    refused: int = 0  # answered 503
    refused_s: float = 0.0  # how long after each node kill submissions still got 503 (sum)
    kills: int = 0  # consumers SIGKILLed (or crashed by their task)
    node_kills: int = 0  # broker nodes SIGKILLed (a cluster's)
    restarts: int = 0  # broker node restarts
    closes: int = 0  # connections the broker force-closed
    redelivered: int = 0  # tasks started more than once (attempts > 1)
    duplicates: int = 0  # tasks that ran to completion more than once
    lost: int | None = None  # accepted tasks not terminal in the store at the end (None: the
    # scenario failed before it could tell)
    unrecorded: int = 0  # tasks that ran without a record (refused with 503, yet delivered)
    seconds: float = 0.0


@dataclass
class ChaosSummary:
    """Rows of the scenarios run so far."""

    rows: list[ChaosRow] = field(default_factory=list)

    def add(self, row: ChaosRow) -> ChaosRow:
        self.rows.append(row)
        return row

    def lines(self) -> list[str]:
        """The table, one string per line, with a totals row."""
        names = [f.name for f in fields(ChaosRow)]
        total = ChaosRow("total", lost=0)
        for row in self.rows:
            for name in names[1:]:
                mine, theirs = getattr(total, name), getattr(row, name)
                setattr(total, name, None if None in (mine, theirs) else mine + theirs)
        cells = [names] + [[_cell(getattr(r, n)) for n in names] for r in [*self.rows, total]]
        widths = [max(len(line[i]) for line in cells) for i in range(len(names))]

        def render(line: list[str]) -> str:
            first = line[0].ljust(widths[0])
            return "  ".join(
                [first] + [c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)]
            )

        rule = "-" * len(render(cells[0]))
        return [render(cells[0]), rule, *map(render, cells[1:-1]), rule, render(cells[-1])]


def _cell(value: object) -> str:
    if value is None:
        return "?"
    return f"{value:.1f}" if isinstance(value, float) else str(value)
