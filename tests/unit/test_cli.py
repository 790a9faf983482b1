"""The `conveyor` API commands (submit, status, tasks, wait, dead letters) against a fake API."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import orjson
import pytest

from conveyor import cli, cli_render
from conveyor import client as client_module
from conveyor.shared.records import DeadLetterPage, TaskPage, TaskRecord, TaskStatus
from tests.unit.test_client import API_URL, TOKEN, FakeApi

Run = tuple[int, str, str]


@pytest.fixture(autouse=True)
def client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_API_URL", API_URL)
    monkeypatch.delenv("CONVEYOR_API_TOKEN", raising=False)
    monkeypatch.delenv("CONVEYOR_API_TIMEOUT_S", raising=False)
    # The fake answers waits at once; the client need not pace itself against it.
    monkeypatch.setattr(client_module, "MIN_POLL_INTERVAL_S", 0.0)


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


def run(
    capsys: pytest.CaptureFixture[str],
    argv: Sequence[str],
    transport: httpx.AsyncBaseTransport,
) -> Run:
    """Exit code, stdout and stderr of `conveyor ARGV`."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv, transport=transport)
    out, err = capsys.readouterr()
    assert isinstance(exit_.value.code, int)
    return exit_.value.code, out, err


def test_submit_prints_the_task_id(capsys: pytest.CaptureFixture[str], api: FakeApi) -> None:
    code, out, err = run(capsys, ["submit", "echo", "--payload", '{"a": 1}'], api.transport())
    assert (code, err) == (0, "")
    assert out.strip() in api.records
    assert api.bodies() == [{"task": "echo", "payload": {"a": 1}}]


def test_submit_sends_every_option(capsys: pytest.CaptureFixture[str], api: FakeApi) -> None:
    argv = ["submit", "sleep", "--queue", "slow", "--idempotency-key", "k-1"]
    argv += ["--max-retries", "0", "--timeout-s", "2.5"]
    code, _, _ = run(capsys, argv, api.transport())
    assert code == 0
    assert api.bodies() == [
        {
            "task": "sleep",
            "payload": {},
            "queue": "slow",
            "idempotency_key": "k-1",
            "max_retries": 0,
            "timeout_s": 2.5,
        }
    ]


def test_submit_json_prints_the_record(capsys: pytest.CaptureFixture[str], api: FakeApi) -> None:
    code, out, _ = run(capsys, ["submit", "echo", "--json"], api.transport())
    record = TaskRecord.model_validate_json(out)
    assert code == 0
    assert record == TaskRecord.model_validate(api.records[record.id])


def test_submit_sends_the_api_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_API_TOKEN", TOKEN)
    api = FakeApi(token=TOKEN)
    code, _, _ = run(capsys, ["submit", "echo"], api.transport())
    assert code == 0
    assert api.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_submit_wait_shows_the_finished_record_and_exits_0(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    api.progress["task-0001"] = [TaskStatus.RUNNING, TaskStatus.SUCCEEDED]
    code, out, err = run(
        capsys, ["submit", "echo", "--payload", '{"a": 1}', "--wait"], api.transport()
    )
    assert (code, err) == (0, "")
    assert "task task-0001" in out and "succeeded" in out and '"echo"' in out


def test_submit_wait_json_prints_the_finished_record(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    api.progress["task-0001"] = [TaskStatus.SUCCEEDED]
    code, out, _ = run(capsys, ["submit", "echo", "--wait", "--json"], api.transport())
    assert code == 0
    assert orjson.loads(out)["status"] == "succeeded"


def test_submit_wait_exits_1_when_the_task_failed(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    api.progress["task-0001"] = [TaskStatus.RUNNING, TaskStatus.FAILED]
    code, out, err = run(capsys, ["submit", "fail", "--wait"], api.transport())
    assert code == 1
    assert "TaskFailed: it [broke]" in out
    assert err == "conveyor: task task-0001 failed\n"


@pytest.mark.parametrize(
    ("payload", "problem"),
    [("{a:1}", "--payload is not valid JSON"), ("[1, 2]", "--payload must be a JSON object")],
)
def test_submit_with_a_bad_payload_exits_2_without_a_request(
    capsys: pytest.CaptureFixture[str], api: FakeApi, payload: str, problem: str
) -> None:
    code, out, err = run(capsys, ["submit", "echo", "--payload", payload], api.transport())
    assert (code, out) == (2, "")
    assert err.startswith(f"conveyor: {problem}") and err.count("\n") == 1
    assert api.requests == []


def test_submit_rejected_by_the_api_exits_2_with_one_line_per_problem(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    code, out, err = run(capsys, ["submit", "nope"], api.transport())
    assert (code, out) == (2, "")
    assert err == "conveyor: task: unknown task 'nope'\n"


def test_an_unreachable_api_exits_1_with_one_line_and_no_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_API_TOKEN", TOKEN)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    code, out, err = run(capsys, ["submit", "echo"], httpx.MockTransport(refuse))
    assert (code, out) == (1, "")
    assert err == f"conveyor: the API at {API_URL} is unreachable: connection refused\n"


def test_a_bad_api_url_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, api: FakeApi
) -> None:
    monkeypatch.setenv("CONVEYOR_API_URL", "ftp://api.test")
    code, _, err = run(capsys, ["status", "x"], api.transport())
    assert code == 2
    assert err.startswith("conveyor: invalid CONVEYOR_API_URL")


def test_status_shows_the_record(capsys: pytest.CaptureFixture[str], api: FakeApi) -> None:
    record = api.add("echo", TaskStatus.SUCCEEDED, payload={"greeting": "hi"}, attempts=1)
    code, out, err = run(capsys, ["status", record["id"]], api.transport())
    assert (code, err) == (0, "")
    for shown in (record["id"], "succeeded", "worker-1", '{"greeting":"hi"}', "result"):
        assert shown in out


def test_status_shows_the_error_of_a_failed_task(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    record = api.add("fail", TaskStatus.FAILED)
    code, out, _ = run(capsys, ["status", record["id"]], api.transport())
    # A status query succeeds whatever the task's status.
    assert code == 0
    assert "failed" in out and "TaskFailed: it [broke]" in out


def test_status_json_prints_the_record(capsys: pytest.CaptureFixture[str], api: FakeApi) -> None:
    record = api.add("echo", TaskStatus.RUNNING)
    code, out, _ = run(capsys, ["status", record["id"], "--json"], api.transport())
    assert code == 0
    assert TaskRecord.model_validate_json(out) == TaskRecord.model_validate(record)


def test_status_of_an_unknown_task_exits_1(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    code, out, err = run(capsys, ["status", "nope"], api.transport())
    assert (code, out, err) == (1, "", "conveyor: task nope not found\n")


def test_tasks_shows_a_table_and_the_next_page_command(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    ids = [api.add("echo", TaskStatus.SUCCEEDED)["id"] for _ in range(3)]
    argv = ["tasks", "--status", "succeeded", "--task", "echo", "--limit", "2"]
    code, out, err = run(capsys, argv, api.transport())
    assert (code, err) == (0, "")
    assert api.requests[0].url.params == httpx.QueryParams(
        {"status": "succeeded", "task": "echo", "limit": "2"}
    )
    rows = [line for line in out.splitlines() if "task-" in line]
    assert [row.split()[0] for row in rows] == [ids[2], ids[1]]
    assert "succeeded" in rows[0] and "worker-1" in rows[0] and "2025-01-02 03:04:08" in rows[0]
    assert "conveyor tasks --status succeeded --task echo --limit 2 --cursor 2" in out


def test_tasks_on_the_last_page_shows_no_next_page(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    api.add()
    code, out, _ = run(capsys, ["tasks", "--cursor", "0"], api.transport())
    assert code == 0
    assert "task-0001" in out and "--cursor" not in out


def test_tasks_without_any_says_so(capsys: pytest.CaptureFixture[str], api: FakeApi) -> None:
    code, out, _ = run(capsys, ["tasks"], api.transport())
    assert (code, out) == (0, "no tasks\n")


def test_tasks_json_prints_the_page(capsys: pytest.CaptureFixture[str], api: FakeApi) -> None:
    records = [api.add() for _ in range(3)]
    code, out, _ = run(capsys, ["tasks", "--limit", "2", "--json"], api.transport())
    assert code == 0
    expected = {"items": [records[2], records[1]], "next_cursor": "2"}
    assert TaskPage.model_validate_json(out) == TaskPage.model_validate(expected)


def test_tasks_rejects_an_unknown_status(capsys: pytest.CaptureFixture[str], api: FakeApi) -> None:
    code, _, err = run(capsys, ["tasks", "--status", "done"], api.transport())
    assert code == 2 and "invalid choice: 'done'" in err


def test_wait_on_several_tasks_shows_progress_then_a_table(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    ids = [api.add()["id"] for _ in range(3)]
    for task_id in ids:
        api.progress[task_id] = [TaskStatus.RUNNING, TaskStatus.SUCCEEDED]
    code, out, err = run(capsys, ["wait", *ids], api.transport())
    assert code == 0
    assert "waiting" in err and "3/3" in err
    rows = [line for line in out.splitlines() if "task-" in line]
    assert [row.split()[0] for row in rows] == ids
    assert all("succeeded" in row for row in rows)


def test_wait_on_one_task_shows_no_progress_bar(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    task_id = api.add()["id"]
    api.progress[task_id] = [TaskStatus.SUCCEEDED]
    code, out, err = run(capsys, ["wait", task_id], api.transport())
    assert (code, err) == (0, "")
    assert task_id in out


def test_wait_json_prints_the_records_in_the_order_given(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    ids = [api.add()["id"] for _ in range(3)]
    for task_id in ids:
        api.progress[task_id] = [TaskStatus.SUCCEEDED]
    code, out, _ = run(capsys, ["wait", ids[2], ids[0], ids[1], ids[0], "--json"], api.transport())
    assert code == 0
    records = orjson.loads(out)
    assert [r["id"] for r in records] == [ids[2], ids[0], ids[1]]
    assert {r["status"] for r in records} == {"succeeded"}


def test_wait_exits_1_when_a_task_failed_or_was_cancelled(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    ids = [api.add()["id"] for _ in range(3)]
    endings = [TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED]
    for task_id, ending in zip(ids, endings, strict=True):
        api.progress[task_id] = [ending]
    code, out, err = run(capsys, ["wait", *ids], api.transport())
    assert code == 1
    assert "3/3" in err
    assert "conveyor: 2 of 3 tasks did not succeed: 1 cancelled, 1 failed\n" in err
    assert "failed" in out and "cancelled" in out


def test_wait_exits_1_when_the_timeout_passes_first(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    done, stuck = api.add()["id"], api.add()["id"]
    api.progress[done] = [TaskStatus.SUCCEEDED]
    api.progress[stuck] = [TaskStatus.RUNNING] * 1000
    code, out, err = run(capsys, ["wait", done, stuck, "--timeout-s", "0.2"], api.transport())
    assert code == 1
    assert "1/2" in err
    assert "conveyor: 1 of 2 tasks did not succeed: 1 still running (timed out)\n" in err
    assert "running" in out


def test_wait_on_an_unknown_task_exits_1(capsys: pytest.CaptureFixture[str], api: FakeApi) -> None:
    known = api.add()["id"]
    api.progress[known] = [TaskStatus.SUCCEEDED]
    code, out, err = run(capsys, ["wait", known, "nope"], api.transport())
    assert (code, out) == (1, "")
    assert err.endswith("conveyor: task nope not found\n")


def test_wait_holds_at_most_16_long_polls_at_once(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    ids = [api.add()["id"] for _ in range(40)]
    for task_id in ids:
        api.progress[task_id] = [TaskStatus.SUCCEEDED]
    in_flight, most = 0, 0

    async def slow_wait(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return api.handle(request)

    code, _, err = run(capsys, ["wait", *ids, "--json"], httpx.MockTransport(slow_wait))
    assert code == 0 and "40/40" in err
    assert most == cli.MAX_CONCURRENT_WAITS == 16


def test_a_narrow_terminal_gets_fewer_columns_and_whole_ids(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, api: FakeApi
) -> None:
    monkeypatch.setattr(cli_render, "PIPE_WIDTH", 0)
    monkeypatch.setenv("COLUMNS", "80")
    task_id = "0190f3a2-7b1c-7d2e-9f00-123456789abc"
    api.add("send_email", TaskStatus.SUCCEEDED, id=task_id)
    code, out, _ = run(capsys, ["tasks"], api.transport())
    assert code == 0
    header, _, row = out.splitlines()[:3]
    assert header.split() == ["id", "task", "status"]
    assert row.split() == [task_id, "send_email", "succeeded"]
    assert max(len(line) for line in out.splitlines()) <= 80


def test_dead_letters_shows_a_table_and_the_next_page_command(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    long_error = "TaskFailed: " + "it broke\n" * 20
    ids = [api.add_dead(error=long_error)["task_id"] for _ in range(3)]
    code, out, err = run(capsys, ["dead-letters", "--limit", "2"], api.transport())
    assert (code, err) == (0, "")
    assert api.requests[0].url.params == httpx.QueryParams({"limit": "2"})
    header = out.splitlines()[0].split()
    assert header[:4] == ["task", "id", "task", "queue"] and header[-1] == "error"
    rows = [line for line in out.splitlines() if line.startswith("task-")]
    assert [row.split()[0] for row in rows] == [ids[2], ids[1]]
    for shown in ("fail", "default", "failed", "4", "2025-01-02 03:06:05", "TaskFailed: it"):
        assert shown in rows[0]
    assert rows[0].endswith("...") and len(rows[0].split("TaskFailed")[1]) < 60
    assert "more dead letters: conveyor dead-letters --limit 2 --cursor 2" in out


def test_dead_letters_shows_a_dash_for_what_a_letter_lacks(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    api.add_dead("garbage-1", reason="rejected", error=None)
    code, out, _ = run(capsys, ["dead-letters"], api.transport())
    assert code == 0
    [row] = [line for line in out.splitlines() if line.startswith("garbage-1")]
    assert row.split() == ["garbage-1", "-", "-", "rejected", "4", "2025-01-02", "03:04:05", "-"]
    assert "--cursor" not in out


def test_dead_letters_without_any_says_so(capsys: pytest.CaptureFixture[str], api: FakeApi) -> None:
    code, out, _ = run(capsys, ["dead-letters"], api.transport())
    assert (code, out) == (0, "no dead letters\n")


def test_dead_letters_json_prints_the_page(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    letters = [api.add_dead() for _ in range(2)]
    code, out, _ = run(capsys, ["dead-letters", "--json", "--cursor", "1"], api.transport())
    assert code == 0
    page = DeadLetterPage.model_validate_json(out)
    assert page == DeadLetterPage.model_validate({"items": [letters[0]], "next_cursor": None})


def test_requeue_prints_each_requeued_id(capsys: pytest.CaptureFixture[str], api: FakeApi) -> None:
    ids = [api.add_dead()["task_id"] for _ in range(2)]
    code, out, err = run(capsys, ["requeue", ids[1], ids[0], ids[1]], api.transport())
    assert (code, err) == (0, "")
    assert out.splitlines() == [ids[1], ids[0]]
    assert [r.url.path for r in api.requests] == [f"/dead-letters/{i}/requeue" for i in ids[::-1]]
    assert api.dead == {}


def test_requeue_goes_on_past_an_unknown_or_unrequeueable_id_and_exits_1(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    task_id = api.add_dead()["task_id"]
    api.add_dead("garbage-1", reason="rejected")
    code, out, err = run(capsys, ["requeue", "nope", "garbage-1", task_id], api.transport())
    assert code == 1
    assert out == f"{task_id}\n"
    assert err.splitlines() == [
        "conveyor: no task with id 'nope'",
        "conveyor: dead letter 'garbage-1' names no queue; purge it instead",
    ]


def test_requeue_json_prints_the_requeued_records(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    task_id = api.add_dead()["task_id"]
    code, out, _ = run(capsys, ["requeue", task_id, "--json"], api.transport())
    assert code == 0
    [record] = orjson.loads(out)
    assert (record["id"], record["status"]) == (task_id, "queued")


def test_requeue_all_says_what_it_did(capsys: pytest.CaptureFixture[str], api: FakeApi) -> None:
    api.add_dead()
    api.add_dead()
    api.add_dead("garbage-1")
    code, out, err = run(capsys, ["requeue", "--all"], api.transport())
    assert (code, err) == (0, "")
    assert out.startswith("requeued 2 dead tasks; skipped 1 that is no task")
    assert [(r.method, r.url.path) for r in api.requests] == [("POST", "/dead-letters/requeue")]


def test_requeue_all_json_prints_the_counts(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    api.add_dead()
    code, out, _ = run(capsys, ["requeue", "--all", "--json"], api.transport())
    assert code == 0
    assert orjson.loads(out) == {"requeued": 1, "skipped": 0}


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["requeue"], "requeue needs dead tasks' ids"),
        (["requeue", "task-0001", "--all"], "requeue takes dead tasks' ids or --all, not both"),
        (["purge-dead-letters"], "purge-dead-letters deletes every dead letter for good"),
    ],
)
def test_dead_letter_commands_with_bad_input_exit_2_without_a_request(
    capsys: pytest.CaptureFixture[str], api: FakeApi, argv: list[str], problem: str
) -> None:
    api.add_dead()
    code, out, err = run(capsys, argv, api.transport())
    assert (code, out) == (2, "")
    assert err.startswith(f"conveyor: {problem}") and err.count("\n") == 1
    assert api.requests == [] and len(api.dead) == 1


def test_purge_dead_letters_with_yes_deletes_them_all(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    api.add_dead()
    api.add_dead("garbage-1")
    code, out, err = run(capsys, ["purge-dead-letters", "--yes"], api.transport())
    assert (code, out, err) == (0, "purged 2 dead letters\n", "")
    assert api.dead == {}


def test_purge_dead_letters_json_prints_the_count(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    api.add_dead()
    code, out, _ = run(capsys, ["purge-dead-letters", "--yes", "--json"], api.transport())
    assert (code, orjson.loads(out)) == (0, {"purged": 1})


@pytest.mark.parametrize(
    "argv", [["dead-letters"], ["requeue", "--all"], ["purge-dead-letters", "--yes"]]
)
def test_dead_letter_commands_exit_1_when_the_api_is_unavailable(
    capsys: pytest.CaptureFixture[str], api: FakeApi, argv: list[str]
) -> None:
    api.failure = httpx.Response(
        503,
        json={"error": "broker_unavailable", "message": "RabbitMQ is not reachable right now"},
    )
    code, out, err = run(capsys, argv, api.transport())
    assert (code, out) == (1, "")
    assert err == "conveyor: RabbitMQ is not reachable right now\n"


def test_a_rate_limited_submit_exits_1_with_the_api_message(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    api.failure = httpx.Response(
        429,
        json={"error": "rate_limited", "message": "too many submissions; retry in 1 s"},
        headers={"Retry-After": "1"},
    )
    code, out, err = run(capsys, ["submit", "echo"], api.transport())
    assert (code, out, err) == (1, "", "conveyor: too many submissions; retry in 1 s\n")


def test_cancel_cancels_each_id_and_names_the_ones_it_could_not(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    queued = api.add("echo", TaskStatus.QUEUED)["id"]
    done = api.add("echo", TaskStatus.SUCCEEDED)["id"]
    code, out, err = run(capsys, ["cancel", queued, done, "nope"], api.transport())
    assert code == 1
    assert out.strip() == f"{queued} cancelled"
    assert f"task {done!r} is already succeeded" in err and "no task with id 'nope'" in err
    assert api.records[queued]["status"] == "cancelled"


def test_submit_passes_a_delay(capsys: pytest.CaptureFixture[str], api: FakeApi) -> None:
    code, _, _ = run(capsys, ["submit", "echo", "--delay-s", "2.5"], api.transport())
    assert code == 0 and api.bodies()[0]["delay_s"] == 2.5


WORKERS = {
    "items": [
        {
            "id": "web-1:42:abc",
            "hostname": "web-1",
            "address": "10.0.3.7",
            "pid": 42,
            "cpu_count": 8,
            "concurrency": 2,
            "queues": ["default", "slow"],
            "version": "0.1.0",
            "state": "lost",
            "started_at": "2026-11-22T10:00:00Z",
            "last_heartbeat_at": "2026-11-22T10:30:00Z",
            "heartbeat_age_s": 31.5,
            "running": ["t-7"],
            "at_risk": ["t-7"],
            "processed": 120,
            "failed": 3,
        }
    ]
}


def _workers_api(request: httpx.Request) -> httpx.Response:
    assert (request.method, request.url.path) == ("GET", "/workers")
    return httpx.Response(200, json=WORKERS)


def test_workers_shows_state_heartbeat_and_running_tasks(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run(capsys, ["workers"], httpx.MockTransport(_workers_api))
    assert (code, err) == (0, "")
    [row] = [line for line in out.splitlines() if "web-1:42:abc" in line]
    for shown in ("lost", "10.0.3.7", "32s ago", "default,slow", "120", "t-7"):
        assert shown in row, (shown, row)


def test_workers_json_prints_them(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, ["workers", "--json"], httpx.MockTransport(_workers_api))
    assert code == 0
    [shown] = orjson.loads(out)
    assert (shown["state"], shown["at_risk"], shown["pid"]) == ("lost", ["t-7"], 42)


def _task_types_api(request: httpx.Request) -> httpx.Response:
    assert request.url.path == "/task-types"
    item = {
        "name": "resize_image", "queue": "images", "max_retries": 5, "timeout_s": 120.0,
        "description": "Resizes an image.", "workers": 0,
        "payload_schema": {"properties": {"url": {}, "width": {}}, "type": "object"},
    }  # fmt: skip
    return httpx.Response(200, json={"items": [item], "next_cursor": None})


def test_task_types_lists_each_task_with_its_options_and_workers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run(capsys, ["task-types"], httpx.MockTransport(_task_types_api))
    assert (code, err) == (0, "")
    [row] = [line for line in out.splitlines() if "resize_image" in line]
    for shown in ("images", "5", "120s", "url, width", "Resizes an image."):
        assert shown in row, (shown, row)
    code, out, _ = run(capsys, ["task-types", "--json"], httpx.MockTransport(_task_types_api))
    page = orjson.loads(out)
    assert code == 0 and page["next_cursor"] is None
    assert [(t["name"], t["workers"]) for t in page["items"]] == [("resize_image", 0)]
