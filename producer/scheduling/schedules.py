"""Cron schedules: the definition, cron and time zone validation, run times, misfires.

Pure functions over epoch seconds, no I/O: the store keeps schedules, the scheduler fires
them. Cron arithmetic is croniter's, in the schedule's IANA time zone (zoneinfo), so
daylight-saving changes behave as croniter defines them:

- a wall time that does not exist (spring forward: 02:30 in Europe/Berlin on the last Sunday
  of March) fires once at the first minute that exists after it (03:00 CEST); an hourly
  schedule simply has no tick in the skipped hour;
- a wall time that exists twice (fall back: 02:30 on the last Sunday of October) fires
  twice, once in each offset (00:30 and 01:30 UTC).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from conveyor.shared.catalog import Catalog
from conveyor.shared.errors import SubmissionError

Misfire = Literal["skip", "once", "all"]
Source = Literal["api", "file"]

# A tick fired up to this late still counts as on time; later ones follow the misfire policy.
ON_TIME_GRACE_S = 1.0
# Most ticks one catch-up considers (misfire "all" fires at most these, the latest ones).
MAX_CATCH_UP_TICKS = 1000
NEXT_RUNS = 5
# Names go into idempotency keys (`schedule:{name}:{tick}`, at most 200 characters).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,149}$"
ScheduleName = Annotated[str, Field(pattern=NAME_PATTERN)]

# croniter's hashed (H) and random (R) fields: random ones differ between replicas, so two
# leaders would disagree on the ticks; hashed ones need a seed. Neither is supported.
_HASHED_OR_RANDOM = re.compile(r"[hr](\(\d+-\d+\))?(/\d+)?", re.IGNORECASE)


def check_cron(expression: str) -> str:
    """`expression` with its fields separated by single spaces, or ValueError saying why it
    is no cron expression we run: 5 fields, or 6 with seconds first."""
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ValueError(
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week) or "
            f"6 with seconds first, got {len(fields)} in {expression!r}"
        )
    if any(_HASHED_OR_RANDOM.fullmatch(item) for field in fields for item in field.split(",")):
        raise ValueError(f"hashed (H) and random (R) cron fields are not supported: {expression!r}")
    normalized = " ".join(fields)
    try:
        croniter(normalized, 0.0, second_at_beginning=len(fields) == 6).get_next(float)
    except CroniterError as error:
        raise ValueError(f"invalid cron expression {expression!r}: {error}") from None
    return normalized


def check_timezone(name: str) -> str:
    """`name` if it is an IANA time zone this system knows, else ValueError."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'"
        ) from None
    return name


def _ticks(cron: str, timezone: str, start_s: float) -> croniter:
    start = datetime.fromtimestamp(start_s, ZoneInfo(timezone))
    return croniter(cron, start, second_at_beginning=len(cron.split()) == 6)


def next_runs(cron: str, timezone: str, after_s: float, count: int = NEXT_RUNS) -> list[float]:
    """The first `count` ticks after `after_s`, as epoch seconds."""
    ticks = _ticks(cron, timezone, after_s)
    return [float(ticks.get_next(float)) for _ in range(count)]


def due_ticks(
    cron: str, timezone: str, after_s: float, now_s: float, limit: int = MAX_CATCH_UP_TICKS
) -> list[float]:
    """Ticks in (`after_s`, `now_s`), oldest first: the latest `limit` of them at most, so a
    schedule left alone for a year costs no more than one left alone for a minute."""
    ticks = _ticks(cron, timezone, now_s)
    found: list[float] = []
    while len(found) < limit:
        tick = float(ticks.get_prev(float))
        if tick <= after_s:
            break
        found.append(tick)
    found.reverse()
    return found


def ticks_to_fire(
    due: Sequence[float], now_s: float, misfire: Misfire, grace_s: float = ON_TIME_GRACE_S
) -> list[float]:
    """Which of the `due` ticks (oldest first) to fire now. Ticks late by more than
    `grace_s` were missed (no leader was up): `skip` fires none of them, `once` the latest,
    `all` every one; ticks on time always fire."""
    missed = [tick for tick in due if tick < now_s - grace_s]
    on_time = list(due[len(missed) :])
    if misfire == "skip":
        missed = []
    elif misfire == "once":
        missed = missed[-1:]
    return missed + on_time


def tick_iso(tick_s: float) -> str:
    """A tick as ISO 8601 UTC: `2026-11-22T10:30:00Z` (milliseconds only where it has them)."""
    moment = datetime.fromtimestamp(round(tick_s, 3), UTC)
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def tick_key(name: str, tick_s: float) -> str:
    """The idempotency key of the task fired for one tick: the store records it only once."""
    return f"schedule:{name}:{tick_iso(tick_s)}"


class ScheduleDefinition(BaseModel):
    """A schedule as clients define it: the body of `PUT /schedules/{name}`, and one table of
    the schedules file."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(
        max_length=200,
        description="5 fields (minute hour day-of-month month day-of-week), or 6 with seconds "
        "first: `0 0 1 * * *` is every day at 01:00:00.",
    )
    timezone: str = Field(default="UTC", max_length=64, description="IANA time zone name.")
    task: str = Field(min_length=1, max_length=200, description="Task name from the catalog.")
    payload: dict[str, Any] = Field(default_factory=dict, description="The task's data.")
    misfire: Misfire = Field(
        default="once",
        description="Ticks missed while no replica led: skip them, run the latest once, or all.",
    )
    queue: str | None = Field(default=None, description="Work queue; default: the task's own.")
    max_retries: int | None = Field(default=None, ge=0, le=100)
    timeout_s: float | None = Field(default=None, gt=0, le=86_400)
    paused: bool | None = Field(
        default=None, description="Pause or resume; unset keeps the schedule's current state."
    )

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, cron: str) -> str:
        return check_cron(cron)

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, timezone: str) -> str:
        return check_timezone(timezone)


class ScheduleFields(BaseModel):
    """What a stored schedule and its API view share: the definition, whether it is paused
    and where it came from (their times differ: epoch seconds stored, ISO 8601 shown)."""

    name: str
    cron: str
    timezone: str
    task: str
    payload: dict[str, Any]
    misfire: Misfire
    queue: str | None
    max_retries: int | None
    timeout_s: float | None
    paused: bool
    source: Source = Field(description="api, or file: defined in CONVEYOR_SCHEDULES_FILE.")


class Schedule(ScheduleFields):
    """A stored schedule: its definition, state and where it came from."""

    model_config = ConfigDict(frozen=True)

    # The latest tick fired or skipped; None: none yet, ticks after created_at are due.
    last_tick_at: float | None
    created_at: float
    updated_at: float

    @property
    def ticks_after(self) -> float:
        """Ticks after this moment are due."""
        return self.created_at if self.last_tick_at is None else self.last_tick_at

    def same_timing(self, definition: ScheduleDefinition) -> bool:
        """Whether `definition` ticks at the same moments as this schedule."""
        return (self.cron, self.timezone) == (definition.cron, definition.timezone)

    def same_definition(self, definition: ScheduleDefinition) -> bool:
        """Whether storing `definition` would change nothing."""
        fields = definition.model_dump(exclude={"paused"})
        same = all(getattr(self, key) == value for key, value in fields.items())
        return same and definition.paused in (None, self.paused)


def check_task(definition: ScheduleDefinition, catalog: Catalog, queues: frozenset[str]) -> None:
    """SubmissionError naming the field unless the task exists, its payload fits the task's
    model and its queue is known: the checks a submission of it would pass."""
    spec = catalog.spec(definition.task)
    catalog.validate_payload(definition.task, definition.payload)
    queue = definition.queue or spec.queue
    if queue not in queues:
        raise SubmissionError(
            f"unknown queue {queue!r}; known queues: {', '.join(sorted(queues))}", field="queue"
        )
