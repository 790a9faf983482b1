"""Cron schedules without a broker: cron and time zones, DST, misfires, tick ids, the
schedules file, the store, the scheduler (two leaders at once) and the HTTP routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import ValidationError

from conveyor.producer.http.app import create_app
from conveyor.producer.runs.waiters import Waiters
from conveyor.producer.scheduling.desk import ScheduleDesk
from conveyor.producer.scheduling.file import load_schedules_file, read_schedules_file
from conveyor.producer.scheduling.scheduler import SUBMISSION_FIELDS, Scheduler, task_submission
from conveyor.producer.scheduling.schedules import (
    ScheduleDefinition,
    ScheduleFields,
    check_cron,
    check_timezone,
    due_ticks,
    next_runs,
    tick_key,
    ticks_to_fire,
)
from conveyor.producer.scheduling.store import ScheduleStore
from conveyor.producer.store.database import TaskStore
from conveyor.producer.submission.submitter import Submitter, TaskSubmission
from conveyor.shared.envelope import TaskMessage
from conveyor.shared.errors import Conflict, ScheduleFileError, SubmissionError
from conveyor.shared.ids import tick_task_id
from tests.support import builtin_catalog

BERLIN = ZoneInfo("Europe/Berlin")


def _at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, tz: ZoneInfo = BERLIN
) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=tz).timestamp()


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


# Cron expressions and time zones ------------------------------------------------------


def test_six_fields_put_seconds_first() -> None:
    # `0 0 1 * * *`: second 0, minute 0, hour 1: every day at 01:00:00.
    runs = next_runs(check_cron("0 0 1 * * *"), "UTC", _at(2026, 1, 1, 12, tz=ZoneInfo("UTC")), 2)
    assert [_utc(run) for run in runs] == ["2026-01-02 01:00:00", "2026-01-03 01:00:00"]
    every_20_s = next_runs("*/20 * * * * *", "UTC", _at(2026, 1, 1, 12, tz=ZoneInfo("UTC")), 3)
    assert [_utc(run)[-8:] for run in every_20_s] == ["12:00:20", "12:00:40", "12:01:00"]


def test_five_fields_are_classic_cron_in_the_schedules_time_zone() -> None:
    runs = next_runs("30 9 * * MON-FRI", "Europe/Berlin", _at(2026, 1, 2, 10), 2)  # a Friday
    assert [_utc(run) for run in runs] == ["2026-01-05 08:30:00", "2026-01-06 08:30:00"]


@pytest.mark.parametrize(
    ("cron", "problem"),
    [
        ("* * * *", "got 4"),
        ("0 0 1 1 * 2030 0", "got 7"),
        ("61 * * * *", "out of range"),
        ("*/0 * * * *", "step '0'"),
        ("0 0 31 2 *", "failed to find next date"),
        ("H * * * *", "hashed (H) and random (R)"),
        ("R 1 * * *", "hashed (H) and random (R)"),
        ("banana * * * *", "invalid cron expression"),
    ],
)
def test_an_invalid_cron_expression_says_what_is_wrong(cron: str, problem: str) -> None:
    with pytest.raises(ValueError, match=r".") as raised:
        check_cron(cron)
    assert problem in str(raised.value)


def test_month_and_weekday_names_are_no_hashed_fields() -> None:
    assert check_cron("0  3 * MAR,NOV THU") == "0 3 * MAR,NOV THU"


def test_an_unknown_time_zone_is_refused() -> None:
    assert check_timezone("America/New_York") == "America/New_York"
    for name in ("Mars/Olympus", "", "../etc/passwd"):
        with pytest.raises(ValueError, match="unknown time zone"):
            check_timezone(name)


def test_the_definition_names_the_bad_field() -> None:
    with pytest.raises(ValidationError) as raised:
        ScheduleDefinition.model_validate({"cron": "* * *", "task": "echo", "timezone": "Nope"})
    assert [error["loc"] for error in raised.value.errors()] == [("cron",), ("timezone",)]


# Daylight saving (Europe/Berlin, 2026: spring forward March 29, fall back October 25) ---


def test_a_wall_time_skipped_by_spring_forward_fires_at_the_next_existing_minute() -> None:
    # croniter: 02:30 does not exist on March 29 (02:00 CET -> 03:00 CEST); it fires at 03:00.
    runs = next_runs("30 2 * * *", "Europe/Berlin", _at(2026, 3, 27, 12), 3)
    local = [datetime.fromtimestamp(run, BERLIN).strftime("%m-%d %H:%M %Z") for run in runs]
    assert local == ["03-28 02:30 CET", "03-29 03:00 CEST", "03-30 02:30 CEST"]
    # An hourly schedule has no tick in the skipped hour: 01:00 CET, then 03:00 CEST.
    hourly = next_runs("0 * * * *", "Europe/Berlin", _at(2026, 3, 29, 0, 30), 3)
    assert [run - hourly[0] for run in hourly] == [0, 3600, 7200]


def test_a_wall_time_repeated_by_fall_back_fires_twice() -> None:
    # croniter: 02:30 happens twice on October 25 (CEST, then CET) and fires both times.
    runs = next_runs("30 2 * * *", "Europe/Berlin", _at(2026, 10, 23, 12), 4)
    assert [_utc(run) for run in runs] == [
        "2026-10-24 00:30:00",
        "2026-10-25 00:30:00",
        "2026-10-25 01:30:00",
        "2026-10-26 01:30:00",
    ]


def test_due_ticks_agree_with_next_runs_across_dst_changes() -> None:
    for start in (_at(2026, 3, 28, 20), _at(2026, 10, 24, 20)):
        end = start + 2 * 86_400
        forward = [t for t in next_runs("*/30 * * * *", "Europe/Berlin", start, 200) if t < end]
        assert due_ticks("*/30 * * * *", "Europe/Berlin", start, end) == forward


# Due ticks and misfires ----------------------------------------------------------------


def test_due_ticks_are_those_after_the_last_and_before_now_at_most_the_limit() -> None:
    assert due_ticks("* * * * * *", "UTC", 100.0, 105.5) == [101.0, 102.0, 103.0, 104.0, 105.0]
    assert due_ticks("* * * * * *", "UTC", 100.0, 100.9) == []
    # A schedule left alone for a long time costs `limit` steps, not one per missed tick.
    assert due_ticks("* * * * * *", "UTC", 0.0, 1e9, limit=3) == [1e9 - 3, 1e9 - 2, 1e9 - 1]


@pytest.mark.parametrize(
    ("misfire", "fired"),
    [
        ("skip", [109.0]),
        ("once", [107.0, 109.0]),
        ("all", [101.0, 103.0, 105.0, 107.0, 109.0]),
    ],
)
def test_missed_ticks_follow_the_misfire_policy_on_time_ones_always_fire(
    misfire: Any, fired: list[float]
) -> None:
    due = [101.0, 103.0, 105.0, 107.0, 109.0]  # now 109.4: 109 is on time, the rest missed
    assert ticks_to_fire(due, 109.4, misfire) == fired


def test_nothing_missed_means_every_policy_fires_the_same() -> None:
    for misfire in ("skip", "once", "all"):
        assert ticks_to_fire([100.0], 100.2, misfire) == [100.0]


# Tick ids --------------------------------------------------------------------------------


def test_a_ticks_id_is_deterministic_unique_and_sorts_by_tick_time() -> None:
    assert tick_task_id("nightly", 1_800_000_000.0) == tick_task_id("nightly", 1_800_000_000.0)
    assert tick_task_id("nightly", 1_800_000_000.0) != tick_task_id("hourly", 1_800_000_000.0)
    ticks = [1_800_000_000.0 + n for n in range(0, 5000, 7)]
    ids = [tick_task_id("nightly", tick) for tick in ticks]
    assert sorted(ids) == ids and len(set(ids)) == len(ids)
    assert ids[0][14] == "7" and ids[0][19] in "89ab"  # UUIDv7 version and variant


def test_a_ticks_idempotency_key_names_the_schedule_and_the_tick() -> None:
    assert tick_key("nightly", 1_800_000_000.0) == "schedule:nightly:2027-01-15T08:00:00Z"


# The schedules file --------------------------------------------------------------------

TOML = """
[nightly-report]
cron = "0 0 1 * * *"
timezone = "Europe/Berlin"
task = "echo"
payload = {report = "nightly"}

[often]
cron = "*/5 * * * *"
task = "sleep"
payload = {seconds = 0.1}
misfire = "all"
paused = true
"""


def test_a_toml_file_defines_schedules(tmp_path: Path) -> None:
    path = tmp_path / "schedules.toml"
    path.write_text(TOML)
    found = read_schedules_file(path, builtin_catalog(), ["default"])
    assert sorted(found) == ["nightly-report", "often"]
    assert found["nightly-report"].misfire == "once" and found["often"].paused is True


def test_a_yaml_file_defines_schedules(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text("hourly:\n  cron: '0 * * * *'\n  task: echo\n  payload: {n: 1}\n")
    found = read_schedules_file(path, builtin_catalog(), ["default"])
    assert found["hourly"].payload == {"n": 1} and found["hourly"].timezone == "UTC"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[a]\ncron = '* * *'\ntask = 'echo'", "schedule 'a': cron: a cron expression has 5"),
        ("[a]\ncron = '* * * * *'\ntask = 'nope'", "schedule 'a': task: unknown task 'nope'"),
        ("[a]\ncron = '* * * * *'\ntask = 'echo'\ntimezone = 'X/Y'", "a': timezone: unknown"),
        ("[a]\ncron = '* * * * *'\ntask = 'sleep'", "schedule 'a': payload.seconds: Field"),
        ("[a]\ncron = '* * * * *'\ntask = 'echo'\nqueue = 'q9'", "a': queue: unknown queue"),
        ("[a]\ncron = '* * * * *'\ntask = 'echo'\ncolour = 1", "schedule 'a': colour: Extra"),
        ("['a b']\ncron = '* * * * *'\ntask = 'echo'", "schedule name 'a b' must be"),
        ("[a]\ncron = ", "not valid TOML"),
    ],
)
def test_a_bad_file_names_the_schedule_and_the_field(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "schedules.toml"
    path.write_text(text)
    with pytest.raises(ScheduleFileError) as raised:
        read_schedules_file(path, builtin_catalog(), ["default"])
    assert str(raised.value).startswith(f"CONVEYOR_SCHEDULES_FILE {path}: ")
    assert problem in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_bad_file_stops_the_producer_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        load_schedules_file(tmp_path / "missing.toml", builtin_catalog(), ["default"])
    assert raised.value.code == 2
    assert "cannot read it" in capsys.readouterr().err
    assert load_schedules_file(None, builtin_catalog(), ["default"]) is None


# The store, the scheduler and the routes, on SQLite with a stand-in publisher ----------


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[TaskMessage] = []
        self.ready = True

    async def publish(self, task: TaskMessage) -> None:
        self.published.append(task)

    async def publish_many(self, tasks: Sequence[TaskMessage]) -> None:
        self.published.extend(tasks)

    async def publish_all(self, tasks: Sequence[TaskMessage]) -> list[Exception | None]:
        self.published.extend(tasks)
        return [None] * len(tasks)


class FakeLeader:
    def __init__(self, replica_id: str = "host:1:abc", leading: bool = True) -> None:
        self.replica_id = replica_id
        self.leading = leading

    async def wait_leading(self) -> None:
        while not self.leading:
            await asyncio.sleep(0.01)

    async def leader(self) -> str | None:
        return self.replica_id if self.leading else None


@dataclass
class Parts:
    tasks: TaskStore
    schedules: ScheduleStore
    submitter: Submitter
    publisher: FakePublisher


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    tasks = await TaskStore.open(f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}")
    publisher = FakePublisher()
    yield Parts(
        tasks,
        ScheduleStore(tasks.engine),
        Submitter(builtin_catalog(), publisher, ["default"], tasks),
        publisher,
    )
    await tasks.close()


def _definition(**fields: Any) -> ScheduleDefinition:
    return ScheduleDefinition.model_validate({"cron": "* * * * * *", "task": "echo", **fields})


async def test_replacing_the_timing_starts_afresh_other_changes_keep_the_last_tick(
    parts: Parts,
) -> None:
    store = parts.schedules
    _, created = await store.put("a", _definition(), "api", now_s=100.0)
    assert created
    await store.advance("a", 150.0)
    same_timing, created = await store.put("a", _definition(payload={"n": 2}), "api", 200.0)
    assert not created and same_timing.last_tick_at == 150.0 and same_timing.payload == {"n": 2}
    new_timing, _ = await store.put("a", _definition(cron="*/2 * * * * *"), "api", 300.0)
    assert new_timing.last_tick_at == 300.0
    assert await store.get("a") == new_timing


async def test_the_last_tick_never_moves_backwards(parts: Parts) -> None:
    await parts.schedules.put("a", _definition(), "api", now_s=100.0)
    assert await parts.schedules.advance("a", 120.0)
    assert not await parts.schedules.advance("a", 110.0)
    schedule = await parts.schedules.get("a")
    assert schedule is not None and schedule.last_tick_at == 120.0


async def test_resuming_does_not_fire_the_ticks_that_fell_while_paused(parts: Parts) -> None:
    store = parts.schedules
    await store.put("a", _definition(), "api", now_s=100.0)
    paused = await store.set_paused("a", True, now_s=110.0)
    assert paused is not None and paused.paused and paused.last_tick_at is None
    resumed = await store.set_paused("a", False, now_s=500.0)
    assert resumed is not None and not resumed.paused and resumed.last_tick_at == 500.0
    assert await store.set_paused("nope", True) is None


async def test_the_file_owns_its_schedules(parts: Parts) -> None:
    store = parts.schedules
    await store.sync_file({"f1": _definition(), "f2": _definition()})
    await store.set_paused("f1", True)
    with pytest.raises(Conflict):
        await store.put("f1", _definition(), "api")
    with pytest.raises(Conflict):
        await store.delete("f1")
    await store.put("mine", _definition(), "api")
    await store.sync_file({"f1": _definition(payload={"v": 2})})  # f2 left the file
    names = [schedule.name for schedule in (await store.page(10))[0]]
    assert names == ["f1", "mine"]
    f1 = await store.get("f1")
    assert f1 is not None and f1.paused and f1.payload == {"v": 2}  # a pause outlives reloads


async def test_pages_follow_the_cursor(parts: Parts) -> None:
    for name in ("c", "a", "b"):
        await parts.schedules.put(name, _definition(), "api")
    first, cursor = await parts.schedules.page(2)
    assert [s.name for s in first] == ["a", "b"] and cursor == "b"
    rest, cursor = await parts.schedules.page(2, cursor)
    assert [s.name for s in rest] == ["c"] and cursor is None
    for bad in ("\x00garbage", "-starts-with-a-dash", "x" * 300):
        with pytest.raises(SubmissionError) as caught:
            await parts.schedules.page(2, bad)
        assert caught.value.field == "cursor"


async def test_two_leaders_at_once_enqueue_each_tick_once(parts: Parts) -> None:
    await parts.schedules.put("every-second", _definition(misfire="all"), "api", now_s=1000.0)
    now = 1010.5
    leaders = [
        Scheduler(parts.schedules, parts.submitter, FakeLeader(), clock=lambda: now)
        for _ in range(2)
    ]
    await asyncio.gather(*(leader.run_round() for leader in leaders))
    await asyncio.gather(*(leader.run_round() for leader in leaders))
    ids = [task.id for task in parts.publisher.published]
    assert len(ids) == len(set(ids)) == 10  # ticks 1001..1010
    assert ids == sorted(ids)
    assert ids == [tick_task_id("every-second", 1001.0 + n) for n in range(10)]
    records = (await parts.tasks.records.list(limit=50)).items
    assert sorted(r.idempotency_key or "" for r in records) == [
        tick_key("every-second", 1001.0 + n) for n in range(10)
    ]
    assert {r.request_id for r in records} == {"schedule:every-second"}
    schedule = await parts.schedules.get("every-second")
    assert schedule is not None and schedule.last_tick_at == 1010.0


async def test_the_scheduler_applies_the_misfire_policy_and_skips_paused_schedules(
    parts: Parts,
) -> None:
    for misfire in ("skip", "once", "all"):
        await parts.schedules.put(misfire, _definition(misfire=misfire), "api", now_s=1000.0)
    await parts.schedules.put("paused", _definition(paused=True), "api", now_s=1000.0)
    now = 1005.5  # ticks 1001..1005: 1005 on time, the rest missed
    scheduler = Scheduler(parts.schedules, parts.submitter, FakeLeader(), clock=lambda: now)
    wake_at = await scheduler.run_round()
    assert wake_at == 1006.0
    fired: dict[str, int] = {}
    for task in parts.publisher.published:
        name = (task.request_id or "").removeprefix("schedule:")
        fired[name] = fired.get(name, 0) + 1
    assert fired == {"skip": 1, "once": 2, "all": 5}


async def test_a_follower_fires_nothing(parts: Parts) -> None:
    await parts.schedules.put("a", _definition(), "api", now_s=1000.0)
    follower = Scheduler(parts.schedules, parts.submitter, FakeLeader(leading=False))
    assert await follower.run_round() is None
    assert parts.publisher.published == []


@pytest.fixture
async def api(parts: Parts) -> AsyncIterator[httpx.AsyncClient]:
    @dataclass
    class Backend:
        store: TaskStore | None
        submitter: Submitter | None
        schedules: ScheduleDesk | None
        waiters: Waiters
        dead_letters: None = None
        canceller: None = None

    desk = ScheduleDesk(parts.schedules, parts.submitter, FakeLeader())
    app = create_app(Backend(parts.tasks, parts.submitter, desk, Waiters()))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"cron": "* * *", "task": "echo"}, "validation_error", "cron"),
        ({"cron": "* * * * *", "task": "echo", "timezone": "Nowhere/Else"}, "validation_error",
         "timezone"),
        ({"cron": "* * * * *", "task": "nope"}, "unknown_task", "task"),
        ({"cron": "* * * * *", "task": "sleep", "payload": {"seconds": "x"}}, "invalid_payload",
         "payload.seconds"),
        ({"cron": "* * * * *", "task": "echo", "queue": "q9"}, "invalid_submission", "queue"),
        ({"cron": "* * * * *", "task": "echo", "misfire": "later"}, "validation_error",
         "misfire"),
    ],
)  # fmt: skip
async def test_a_bad_schedule_is_422_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, Any], code: str, field: str
) -> None:
    reply = await api.put("/schedules/s1", json=body)
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"] == code
    assert [detail["field"] for detail in reply.json()["details"]] == [field]


async def test_schedule_routes_create_replace_pause_resume_delete(api: httpx.AsyncClient) -> None:
    body = {"cron": "0 0 1 * * *", "task": "echo", "payload": {"n": 1}}
    created = await api.put("/schedules/daily", json=body)
    assert created.status_code == 201
    view = created.json()
    assert view["misfire"] == "once" and view["source"] == "api" and view["paused"] is False
    assert len(view["next_runs"]) == 5 and view["next_runs"][0].endswith("T01:00:00Z")
    replaced = await api.put("/schedules/daily", json=body | {"payload": {"n": 2}})
    assert replaced.status_code == 200 and replaced.json()["payload"] == {"n": 2}
    paused = await api.post("/schedules/daily/pause")
    assert paused.status_code == 200 and paused.json()["paused"] and not paused.json()["next_runs"]
    resumed = await api.post("/schedules/daily/resume")
    assert not resumed.json()["paused"] and len(resumed.json()["next_runs"]) == 5
    listing = (await api.get("/schedules")).json()
    assert [item["name"] for item in listing["items"]] == ["daily"]
    assert listing["next_cursor"] is None
    assert listing["leader"] == listing["this_replica"] == "host:1:abc"
    assert (await api.delete("/schedules/daily")).status_code == 204
    for reply in (
        await api.get("/schedules/daily"),
        await api.delete("/schedules/daily"),
        await api.post("/schedules/daily/pause"),
    ):
        assert reply.status_code == 404 and reply.json()["error"] == "not_found"
    bad_name = await api.put("/schedules/no%20spaces", json=body)
    assert bad_name.status_code == 422 and bad_name.json()["details"][0]["field"] == "name"


async def test_the_api_cannot_replace_a_file_defined_schedule(
    api: httpx.AsyncClient, parts: Parts
) -> None:
    await parts.schedules.sync_file({"from-file": _definition()})
    reply = await api.put("/schedules/from-file", json={"cron": "* * * * *", "task": "echo"})
    assert reply.status_code == 409 and "CONVEYOR_SCHEDULES_FILE" in reply.json()["message"]
    assert (await api.post("/schedules/from-file/pause")).json()["paused"] is True


def test_a_schedules_task_submission_carries_its_task_payload_and_overrides() -> None:
    definition = ScheduleDefinition(
        cron="* * * * *",
        task="echo",
        payload={"n": 1},
        queue="other",
        max_retries=2,
        timeout_s=5.0,
    )
    assert task_submission(definition, "schedule:s:tick") == TaskSubmission(
        task="echo",
        payload={"n": 1},
        queue="other",
        max_retries=2,
        timeout_s=5.0,
        idempotency_key="schedule:s:tick",
    )
    for model in (ScheduleDefinition, ScheduleFields, TaskSubmission):
        assert model.model_fields.keys() >= SUBMISSION_FIELDS, model
