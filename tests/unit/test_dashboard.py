"""The dashboard's page and files, and `GET /stats`, against the app with a real SQLite store."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from conveyor.producer.http.app import create_app
from conveyor.producer.http.dashboard import ASSETS, read_asset
from conveyor.producer.store.database import TaskStore
from conveyor.producer.store.submissions import NewTask
from conveyor.shared.envelope import TaskMessage
from conveyor.shared.events import make_event
from conveyor.shared.ids import new_task_id
from conveyor.shared.records import TaskStatus
from tests.unit.test_api import Backend

TOKEN = "s3cret-dash"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def http(store: TaskStore) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Backend(store), api_tokens=[TOKEN])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


async def test_page_and_its_files_load_without_a_token_while_the_api_needs_one(
    http: httpx.AsyncClient,
) -> None:
    page = await http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    referenced = re.findall(r'(?:src|href)="(static/[^"]+)"', page.text)
    assert sorted(referenced) == ["static/dashboard.css", "static/dashboard.js"]
    for path, kind in (
        ("/static/dashboard.js", "text/javascript"),
        ("/static/dashboard.css", "text/css"),
    ):
        reply = await http.get(path)
        assert reply.status_code == 200 and reply.headers["content-type"].startswith(kind)
        assert reply.content == read_asset(path.rsplit("/", 1)[1])

    for path in ("/tasks", "/stats", "/dead-letters", "/schedules", "/static/other.js"):
        reply = await http.get(path)
        assert reply.status_code == 401 and reply.json()["error"] == "unauthorized", path
    assert (await http.get("/stats", headers=AUTH)).status_code == 200


def test_dashboard_files_load_nothing_from_elsewhere_and_never_write_markup() -> None:
    texts = {name: read_asset(name).decode() for name, _ in ASSETS.values()}
    for name, text in texts.items():
        # The SVG namespace is a name, not a download.
        urls = set(re.findall(r"https?://[^\s\"')]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, (name, urls)
    script = texts["dashboard.js"]
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink


async def test_openapi_docs_still_served_and_the_page_is_not_in_the_schema() -> None:
    app = create_app(Backend())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        assert (await client.get("/docs")).status_code == 200
        paths = (await client.get("/openapi.json")).json()["paths"]
        assert "/stats" in paths and "/" not in paths and "/static/dashboard.js" not in paths


async def _finish(store: TaskStore, state: TaskStatus | None) -> str:
    message = TaskMessage(id=new_task_id(), task="echo", queue="default", payload={})
    await store.submissions.add([NewTask(message, 3, 300.0)])
    if state is not None:
        await store.events.apply([make_event(message.id, "echo", state, 1, "w")])
    return message.id


async def test_stats_count_records_and_put_the_just_finished_in_the_last_buckets(
    http: httpx.AsyncClient, store: TaskStore
) -> None:
    for state in (TaskStatus.SUCCEEDED, TaskStatus.SUCCEEDED, TaskStatus.FAILED, None):
        await _finish(store, state)

    stats = (await http.get("/stats", headers=AUTH)).json()
    assert stats["counts"] == {
        status.value: {"succeeded": 2, "failed": 1, "queued": 1}.get(status.value, 0)
        for status in TaskStatus
    }
    points = stats["throughput"]
    assert len(points) == 60 and stats["bucket_s"] == 10
    assert points[0]["at"].endswith("Z") and points[0]["at"] < points[-1]["at"]
    # Finished a moment ago: in the newest bucket, or the one before if a bucket just turned.
    recent = points[-2:]
    assert sum(p["succeeded"] for p in recent) == 2 and sum(p["failed"] for p in recent) == 1
    assert sum(p["succeeded"] + p["failed"] for p in points[:-2]) == 0


async def test_stats_answer_503_until_the_store_is_open() -> None:
    app = create_app(Backend())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        reply = await client.get("/stats")
        assert reply.status_code == 503 and reply.json()["error"] == "store_unavailable"
