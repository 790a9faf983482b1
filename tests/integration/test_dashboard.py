"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a real
producer and consumer on the real RabbitMQ, with API tokens on."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from playwright.async_api import (
    ConsoleMessage,
    Error,
    Locator,
    Page,
    async_playwright,
    expect,
)

from tests.integration.conftest import OpenApi, wait_status
from tests.support import REPO, ServiceProcess

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "dash-token-1"
SCREENSHOT = REPO / "docs" / "dashboard.png"
SEEN_MS = 30_000  # deadline for the page to show what the API already says

# CI installs chromium (.ci/run), so there it must run: a missing browser fails there.
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason=f"{CHROMIUM} is missing: apt-get install chromium (CI installs it)",
)


class BrowserErrors:
    """Uncaught exceptions and console errors of the page, but failed loads: the page is
    meant to meet 401s and, before /workers and /queues exist, 404s."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_error(self, error: Error) -> None:
        self.seen.append(f"uncaught: {error}")

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.seen.append(f"console: {message.text}")


@pytest.fixture
def browser_errors() -> BrowserErrors:
    return BrowserErrors()


@pytest.fixture
async def page(browser_errors: BrowserErrors) -> AsyncIterator[Page]:
    """A laptop-sized page in headless chromium, the distribution's build."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM))
        # UTC: the times the page shows do not depend on the machine's zone.
        context = await browser.new_context(
            viewport={"width": 1366, "height": 768}, timezone_id="UTC"
        )
        opened = await context.new_page()
        opened.on("pageerror", browser_errors.on_error)
        opened.on("console", browser_errors.on_console)
        yield opened
        await browser.close()


async def _page_is_open_but_the_api_is_not(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as anonymous:
        for path in ("/", "/static/dashboard.js", "/static/dashboard.css"):
            assert (await anonymous.get(path)).status_code == 200, path
        for path in ("/tasks", "/stats", "/dead-letters"):
            reply = await anonymous.get(path)
            assert reply.status_code == 401 and reply.json()["error"] == "unauthorized", path


async def _sign_in(page: Page) -> None:
    """The page meets a 401, asks for the token; a wrong one is refused, the right one kept."""
    panel = page.locator("#token-panel")
    await expect(panel).to_be_visible(timeout=SEEN_MS)
    await expect(page.locator("#token-reason")).to_have_text("This API needs a token.")
    await page.fill("#token-input", "not-the-token")
    await page.click("#token-save")
    await expect(page.locator("#token-reason")).to_have_text(
        "The saved token was refused.", timeout=SEEN_MS
    )
    await expect(panel).to_be_visible()
    await page.fill("#token-input", TOKEN)
    await page.click("#token-save")
    await expect(panel).to_be_hidden()
    assert await page.evaluate("localStorage.getItem('conveyor.apiToken')") == TOKEN


def _task_status(page: Page, task_id: str) -> Locator:
    return page.locator(f'#tasks-body tr[data-task-id="{task_id}"] [data-status]')


async def _expect_optional_panel(page: Page, api: httpx.AsyncClient, name: str) -> None:
    """/workers and /queues arrive with the worker registry: rows if they exist, else the
    panel says it is not available (and the rest of the page works)."""
    path = "workers" if name == "workers" else "queues"
    if (await api.get(f"/{path}")).status_code == 404:
        await expect(page.locator(f"#{name}-msg")).to_contain_text("not available")
    elif name == "workers":
        online = page.locator('#workers-body [data-state="online"]')
        await expect(online).to_have_count(1, timeout=SEEN_MS)
    else:
        await expect(page.locator('#queues-body tr[data-queue="default"]')).to_be_visible()


async def test_dashboard_shows_tasks_succeed_and_requeues_a_dead_letter_by_click(
    open_api: OpenApi,
    spawn: Callable[..., ServiceProcess],
    page: Page,
    browser_errors: BrowserErrors,
) -> None:
    api = await open_api(api_tokens=TOKEN, test_tasks="true")
    base_url = str(api.base_url)
    await _page_is_open_but_the_api_is_not(base_url)
    api.headers["Authorization"] = f"Bearer {TOKEN}"
    spawn("consumer", test_tasks="true")
    schedule = {"cron": "0 3 * * *", "task": "echo", "payload": {"report": "nightly"}}
    assert (await api.put("/schedules/nightly-report", json=schedule)).status_code == 201

    await page.goto(base_url + "/")
    await _sign_in(page)

    batch = {"tasks": [{"task": "echo", "payload": {"n": n}} for n in range(12)]}
    ids = [r["id"] for r in (await api.post("/tasks/batch", json=batch)).json()["items"]]
    # A payload that would be markup, were the page to write data as HTML.
    markup = "<img src=x onerror=window.pwned=1>"
    html_id = (await api.post("/tasks", json={"task": "echo", "payload": {"html": markup}})).json()
    html_id = html_id["id"]
    for task_id in [*ids, html_id]:
        await expect(_task_status(page, task_id)).to_have_text("succeeded", timeout=SEEN_MS)
    await expect(page.locator('[data-count="succeeded"]')).to_have_text("13", timeout=SEEN_MS)

    # A task's detail: payload and result as text, attempts, no markup made from data.
    await page.click(f'#tasks-body tr[data-task-id="{html_id}"] button[data-open]')
    await expect(page.locator("#detail")).to_be_visible()
    await expect(page.locator("#detail-status [data-status]")).to_have_text("succeeded")
    await expect(page.locator('#detail-body pre[data-field="payload"]')).to_contain_text(markup)
    await expect(page.locator('#detail-body pre[data-field="result"]')).to_contain_text(markup)
    await expect(page.locator("#detail-body")).to_contain_text("1 (retries allowed: 3)")
    assert await page.locator("#detail img").count() == 0
    assert await page.evaluate("window.pwned") is None
    await page.click("#detail-close")
    await expect(page.locator("#detail")).to_be_hidden()

    # Fails its first attempt with no retries: a dead letter; a second attempt would succeed.
    failing = {"task": "fail", "payload": {"message": "no, not yet", "times": 1}, "max_retries": 0}
    dead_id = (await api.post("/tasks", json=failing)).json()["id"]
    await expect(_task_status(page, dead_id)).to_have_text("failed", timeout=SEEN_MS)
    letter = page.locator(f'#dead-body tr[data-dead-letter="{dead_id}"]')
    await expect(letter).to_contain_text("failed", timeout=SEEN_MS)
    await expect(page.locator('[data-count="failed"]')).to_have_text("1", timeout=SEEN_MS)
    await page.select_option("#status-filter", "failed")
    await expect(page.locator("#tasks-body tr[data-task-id]")).to_have_count(1, timeout=SEEN_MS)
    await expect(_task_status(page, dead_id)).to_have_text("failed")
    await page.select_option("#status-filter", "")
    await expect(page.locator("#tasks-body tr[data-task-id]")).to_have_count(14, timeout=SEEN_MS)
    await page.locator("#status-filter").blur()
    await expect(
        page.locator('#schedules-body tr[data-schedule="nightly-report"]')
    ).to_contain_text("03:00")
    for name in ("workers", "queues"):
        await _expect_optional_panel(page, api, name)
    await expect(page.locator("#throughput-note")).to_contain_text("14 in 10 min", timeout=SEEN_MS)
    await expect(page.locator("#chart rect.ok")).to_have_count(60)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOT))

    await letter.locator("button[data-requeue]").click()
    await expect(page.locator("#toasts")).to_contain_text(f"Requeued {dead_id}", timeout=SEEN_MS)
    await expect(letter).to_have_count(0, timeout=SEEN_MS)
    record = await wait_status(api, dead_id, "succeeded")
    assert record["attempts"] == 2 and record["result"] == {"succeeded_on_attempt": 2}
    letters = (await api.get("/dead-letters")).json()["items"]
    assert dead_id not in {item["task_id"] for item in letters}
    await expect(_task_status(page, dead_id)).to_have_text("succeeded", timeout=SEEN_MS)

    # Search by id (typing filters the rows, Enter opens it) and cancel from the detail.
    later = {"task": "echo", "payload": {}, "delay_s": 3600}
    later_id = (await api.post("/tasks", json=later)).json()["id"]
    await expect(_task_status(page, later_id)).to_have_text("scheduled", timeout=SEEN_MS)
    await page.fill("#search-input", later_id[-10:])
    await expect(page.locator("#tasks-body tr[data-task-id]:visible")).to_have_count(1)
    await page.fill("#search-input", later_id)
    await page.press("#search-input", "Enter")
    await expect(page.locator("#detail-status [data-status]")).to_have_text("scheduled")
    await page.click("#detail-cancel")
    await expect(page.locator("#detail-status [data-status]")).to_have_text(
        "cancelled", timeout=SEEN_MS
    )
    await expect(page.locator("#detail-cancel")).to_be_hidden()
    assert (await api.get(f"/tasks/{later_id}")).json()["status"] == "cancelled"
    await page.click("#detail-close")
    await page.fill("#search-input", "")
    await expect(page.locator("#tasks-body tr[data-task-id]:visible")).to_have_count(15)

    stats = (await api.get("/stats")).json()
    counts = stats["counts"]
    assert (counts["succeeded"], counts["failed"], counts["cancelled"]) == (14, 0, 1)
    finished = [sum(point[key] for point in stats["throughput"]) for key in ("succeeded", "failed")]
    assert finished == [14, 0]

    # The token stays in the browser: a reload needs no sign-in.
    await page.reload()
    await expect(_task_status(page, dead_id)).to_have_text("succeeded", timeout=SEEN_MS)
    await expect(page.locator("#token-panel")).to_be_hidden()
    assert browser_errors.seen == []
