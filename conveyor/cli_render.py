"""How the `conveyor` API commands show things: record panels, tables, progress, JSON."""

from __future__ import annotations

import shlex
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from rich import box
from rich.console import Console, RenderableType
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from conveyor.shared.records import DeadLetterView, TaskRecord, TaskStatus, TaskTypeView, WorkerView

STATUS_STYLES = {
    TaskStatus.QUEUED: "cyan",
    TaskStatus.RUNNING: "blue",
    TaskStatus.RETRYING: "yellow",
    TaskStatus.SUCCEEDED: "green",
    TaskStatus.FAILED: "bold red",
    TaskStatus.CANCELLED: "magenta",
}
COMPACT_JSON_CHARS = 60
PIPE_WIDTH = 200
UNBOUNDED_WIDTH = 10_000  # to measure a table's natural width, not the width it is given
ERROR_CHARS = 60  # of a dead letter's error in its table row; `--json` has all of it

RowT = TypeVar("RowT")


def _stdout() -> Console:
    # highlight=False: rich would colour numbers and quotes inside ids and payloads at random.
    console = Console(highlight=False)
    if not console.is_terminal:
        # Output to a pipe or file has no width to fit: keep table rows on one line each.
        console.width = max(console.width, PIPE_WIDTH)
    return console


def print_json(value: Any) -> None:
    """One JSON document on stdout (records as the API sends them)."""
    sys.stdout.write(orjson.dumps(value).decode() + "\n")


def records_json(records: Sequence[TaskRecord]) -> list[dict[str, Any]]:
    """Records as JSON-ready dicts, in the API's own shape."""
    return [record.model_dump(mode="json") for record in records]


def status_text(status: TaskStatus) -> Text:
    """The status word in its colour."""
    return Text(status.value, style=STATUS_STYLES[status])


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _json_text(value: Any) -> Text:
    """Short values on one line; long ones indented, so they stay readable."""
    compact = orjson.dumps(value).decode()
    if len(compact) <= COMPACT_JSON_CHARS:
        return Text(compact)
    return Text(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def show_record(record: TaskRecord) -> None:
    """One task as a panel: what it is, where it is, and its result or error."""
    # Text objects, never markup strings: payloads and error messages may contain [brackets].
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, RenderableType | None]] = [
        ("task", Text(record.task)),
        ("queue", Text(record.queue)),
        ("status", status_text(record.status)),
        ("attempts", Text(f"{record.attempts} (max retries {record.max_retries})")),
        ("timeout", Text(f"{record.timeout_s:g} s per attempt")),
        ("worker", Text(record.worker) if record.worker else None),
        ("idempotency key", Text(record.idempotency_key) if record.idempotency_key else None),
        ("request id", Text(record.request_id) if record.request_id else None),
        ("created (UTC)", Text(_time(record.created_at))),
        ("started (UTC)", Text(_time(record.started_at)) if record.started_at else None),
        ("finished (UTC)", Text(_time(record.finished_at)) if record.finished_at else None),
        ("payload", _json_text(record.payload)),
    ]
    if record.status is TaskStatus.SUCCEEDED or record.result is not None:
        rows.append(("result", _json_text(record.result)))
    if record.error is not None:
        rows.append(("error", Text(f"{record.error.type}: {record.error.message}", style="red")))
        if record.error.traceback:
            rows.append(("traceback", Text(record.error.traceback.rstrip(), style="dim")))
    for label, value in rows:
        if value is not None:
            grid.add_row(label, value)
    title = Text(f"task {record.id}", style="bold")
    _stdout().print(
        Panel(grid, title=title, border_style=STATUS_STYLES[record.status], expand=False)
    )


# The task table's columns in display order, and which to leave out first when space is short.
TABLE_COLUMNS: dict[str, Callable[[TaskRecord], RenderableType]] = {
    "id": lambda r: Text(r.id),
    "task": lambda r: Text(r.task),
    "queue": lambda r: Text(r.queue),
    "status": lambda r: status_text(r.status),
    "attempts": lambda r: str(r.attempts),
    "worker": lambda r: Text(r.worker or "-"),
    "created (UTC)": lambda r: _time(r.created_at),
    "finished (UTC)": lambda r: _time(r.finished_at),
}
NARROW_DROPS = ("worker", "queue", "finished (UTC)", "attempts", "created (UTC)")


# A dead letter's columns likewise; the error is cut short to keep one line per letter.
DEAD_LETTER_COLUMNS: dict[str, Callable[[DeadLetterView], RenderableType]] = {
    "task id": lambda d: Text(d.task_id),
    "task": lambda d: Text(d.task or "-"),
    "queue": lambda d: Text(d.queue or "-"),
    "reason": lambda d: Text(d.reason, style="red"),
    "attempts": lambda d: str(d.attempts),
    "dead-lettered (UTC)": lambda d: _time(d.dead_lettered_at),
    "error": lambda d: Text(_shortened(d.error or "-", ERROR_CHARS)),
}
DEAD_LETTER_NARROW_DROPS = ("queue", "attempts", "error", "dead-lettered (UTC)")
WORKER_STATE_STYLES = {"online": "green", "lost": "red", "offline": "dim"}
WORKER_COLUMNS: dict[str, Callable[[WorkerView], RenderableType]] = {
    "worker": lambda w: Text(w.id),
    "address": lambda w: w.address or "-",
    "state": lambda w: Text(w.state, style=WORKER_STATE_STYLES[w.state]),
    "heartbeat": lambda w: f"{w.heartbeat_age_s:.0f}s ago",
    "queues": lambda w: ",".join(w.queues),
    "cpus": lambda w: str(w.cpu_count),
    "slots": lambda w: str(w.concurrency),
    "processed": lambda w: str(w.processed),
    "failed": lambda w: str(w.failed),
    "running": lambda w: Text(", ".join(w.running) or "-", style="red" if w.at_risk else ""),
}
WORKER_NARROW_DROPS = ("running", "address", "cpus", "slots", "queues")

TASK_TYPE_COLUMNS: dict[str, Callable[[TaskTypeView], RenderableType]] = {
    "task": lambda t: Text(t.name),
    "queue": lambda t: t.queue,
    "retries": lambda t: str(t.max_retries),
    "timeout": lambda t: f"{t.timeout_s:g}s",
    "workers": lambda t: Text(str(t.workers), style="" if t.workers else "red"),
    "fields": lambda t: ", ".join(t.payload_schema.get("properties", {})) or "-",
    "description": lambda t: _shortened(t.description, 60),
}
TASK_TYPE_NARROW_DROPS = ("description", "fields", "timeout", "retries")


def _shortened(text: str, most_chars: int) -> str:
    """On one line, and at most `most_chars` long ("..." marks the cut)."""
    line = " ".join(text.split())
    return line if len(line) <= most_chars else line[: most_chars - 3] + "..."


def _table(
    rows: Sequence[RowT],
    columns: Mapping[str, Callable[[RowT], RenderableType]],
    shown: Sequence[str],
) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in shown:
        table.add_column(name, no_wrap=True, justify="right" if name == "attempts" else "left")
    for row in rows:
        table.add_row(*(columns[name](row) for name in shown))
    return table


def _print_fitted(
    rows: Sequence[RowT],
    columns: Mapping[str, Callable[[RowT], RenderableType]],
    narrow_drops: Sequence[str],
) -> None:
    """Rows as a table, one line each; a narrow terminal gets fewer columns, not cut ids."""
    console = _stdout()
    for dropped in range(len(narrow_drops) + 1):
        shown = [name for name in columns if name not in narrow_drops[:dropped]]
        table = _table(rows, columns, shown)
        unbounded = console.options.update_width(UNBOUNDED_WIDTH)
        if console.measure(table, options=unbounded).maximum <= console.width:
            break
    console.print(table)


def show_table(records: Sequence[TaskRecord]) -> None:
    """Records as a table, one line each, as many columns as fit."""
    if not records:
        _stdout().print(Text("no tasks", style="dim"))
        return
    _print_fitted(records, TABLE_COLUMNS, NARROW_DROPS)


def show_dead_letters(letters: Sequence[DeadLetterView]) -> None:
    """Dead letters as a table, one line each, as many columns as fit."""
    if not letters:
        _stdout().print(Text("no dead letters", style="dim"))
        return
    _print_fitted(letters, DEAD_LETTER_COLUMNS, DEAD_LETTER_NARROW_DROPS)


def show_workers(workers: Sequence[WorkerView]) -> None:
    """Workers as a table; a lost worker's running tasks (at risk) in red."""
    if not workers:
        _stdout().print(Text("no workers have announced themselves", style="dim"))
        return
    _print_fitted(workers, WORKER_COLUMNS, WORKER_NARROW_DROPS)


def show_task_types(task_types: Sequence[TaskTypeView]) -> None:
    """Task types as a table; one no online worker serves has its count in red."""
    _print_fitted(task_types, TASK_TYPE_COLUMNS, TASK_TYPE_NARROW_DROPS)


def requeue_summary(requeued: int, skipped: int) -> str:
    """One line on what `requeue --all` did."""
    line = f"requeued {requeued} dead task{'' if requeued == 1 else 's'}"
    if skipped:
        line += f"; skipped {skipped} that {'is' if skipped == 1 else 'are'} no task"
        line += " (conveyor dead-letters shows why)"
    return line


def show_next_page_hint(argv: Sequence[str], next_cursor: str, what: str = "tasks") -> None:
    """The command that shows the next page: the same filters plus --cursor."""
    command = shlex.join(["conveyor", *argv, "--cursor", next_cursor])
    _stdout().print(Text(f"more {what}: {command}", style="dim"))


def unsuccessful_summary(records: Sequence[TaskRecord]) -> str | None:
    """One line on the tasks that did not succeed, or None when all did."""
    missed = [r for r in records if r.status is not TaskStatus.SUCCEEDED]
    if not missed:
        return None
    if len(records) == 1:
        return f"task {missed[0].id} {_outcome(missed[0].status)}"
    counts = Counter(r.status for r in missed)
    outcomes = ", ".join(f"{n} {_outcome(status)}" for status, n in sorted(counts.items()))
    return f"{len(missed)} of {len(records)} tasks did not succeed: {outcomes}"


def _outcome(status: TaskStatus) -> str:
    return status.value if status.terminal else f"still {status.value} (timed out)"


@contextmanager
def wait_progress(total: int) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr for waits on several tasks; yields 'one more finished'."""
    if total < 2:
        yield lambda: None
        return
    progress = Progress(
        TextColumn("waiting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    with progress:
        bar = progress.add_task("waiting", total=total)
        yield lambda: progress.advance(bar)
