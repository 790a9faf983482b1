"""Status events of task runs: `running` for the ones that take a while, and how each ended.

Quick tasks cost one event, not two: `running` goes out only for runs still going after
`report_running_after_s`, found by one periodic sweep rather than a timer per task (timers
cost more than the rest of a quick task's bookkeeping).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from conveyor.consumer.reporter import Reporter
from conveyor.shared.background import BackgroundLoop
from conveyor.shared.envelope import TaskMessage
from conveyor.shared.events import TaskEvent, make_event
from conveyor.shared.records import TaskStatus

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Run:
    """A task being run: `event(state, ...)` makes its status events."""

    event: Callable[..., TaskEvent]
    started: float  # time.monotonic()
    reported: bool = False


class RunReports:
    """Tracks runs and reports them through `reporter`."""

    def __init__(
        self,
        reporter: Reporter,
        worker_id: str,
        report_running_after_s: float,
        *,
        ack_after_report: bool = False,
    ) -> None:
        self._reporter = reporter
        self._worker_id = worker_id
        self._report_running_after_s = report_running_after_s
        self._ack_after_report = ack_after_report
        self._runs: set[Run] = set()
        self._sweeping = BackgroundLoop(
            "conveyor-running",
            self._report_long_runs,
            every_s=max(report_running_after_s / 2, 0.01),
            wait_first=True,
            logger=log,
        )

    def start(self) -> None:
        self._sweeping.start()

    async def stop(self) -> None:
        await self._sweeping.stop()

    def start_run(self, task: TaskMessage, redelivered: bool, run_number: int) -> Run | None:
        """Track a run for its status events; None when events are off (nothing to build)."""
        if not self._reporter.events_enabled:
            return None
        event = partial(
            make_event,
            task.id,
            task.task,
            attempt=task.attempt,
            worker=self._worker_id,
            redelivered=redelivered,
            started_at=time.time(),
            run=run_number,
        )
        run = Run(event, time.monotonic())
        if self._report_running_after_s <= 0:
            self._reporter.emit(event(TaskStatus.RUNNING))
            run.reported = True
        self._runs.add(run)
        return run

    def end_run(self, run: Run | None, state: TaskStatus | None, **details: Any) -> int:
        """Stop tracking `run`; report its final `state`, if any (the event's number)."""
        if run is None:
            return 0
        self._runs.discard(run)
        if state is None:
            return 0
        return self._reporter.emit(run.event(state, **details))

    async def report_end(self, run: Run | None, state: TaskStatus, **details: Any) -> None:
        """Report the run's end; with ack_after_report, wait for the broker's confirm, so a
        task is never acked before its record can learn the outcome."""
        number = self.end_run(run, state, **details)
        if self._ack_after_report and number:
            await self._reporter.wait_confirmed(number)

    async def _report_long_runs(self) -> None:
        """Report `running` for the runs going on for report_running_after_s by now."""
        due = time.monotonic() - self._report_running_after_s
        for run in list(self._runs):
            if not run.reported and run.started <= due:
                self._reporter.emit(run.event(TaskStatus.RUNNING))
                run.reported = True
