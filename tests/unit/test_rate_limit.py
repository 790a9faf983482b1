"""Per-client submission rate limits: the RateLimit middleware on a fake clock, then wired
into the real app (SQLite store, stand-in publisher)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor.producer.http.app import create_app
from conveyor.producer.http.guards import RateLimit
from conveyor.producer.store.database import TaskStore
from conveyor.producer.submission.submitter import Submitter
from tests.support import builtin_catalog
from tests.unit.test_api import Backend, FakePublisher

TOKEN_A = "token-a-s3cret"
TOKEN_B = "token-b-s3cret"
SUBMISSION = {"task": "echo", "payload": {}}


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


async def accept(scope: Scope, receive: Receive, send: Send) -> None:
    """The app behind the limit: takes every request."""
    await PlainTextResponse("accepted", status_code=202)(scope, receive, send)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _http(app: ASGIApp, address: str = "10.0.0.1", token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.ASGITransport(app=app, client=(address, 4242))
    return httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers)


async def _submit(http: httpx.AsyncClient, times: int = 1) -> list[int]:
    return [(await http.post("/tasks", json=SUBMISSION)).status_code for _ in range(times)]


async def test_a_burst_past_the_limit_gets_429_with_retry_after_and_a_json_body(
    clock: FakeClock,
) -> None:
    limiter = RateLimit(accept, per_s=3, clock=clock)
    async with _http(limiter) as http:
        assert await _submit(http, 3) == [202, 202, 202]  # one second's worth at once
        refused = await http.post("/tasks", json=SUBMISSION)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["Content-Type"] == "application/json"
    body = refused.json()
    assert body["error"] == "rate_limited" and body["details"] == []
    assert "3 submissions a second" in body["message"]


async def test_retry_after_is_whole_seconds_until_the_next_token(clock: FakeClock) -> None:
    limiter = RateLimit(accept, per_s=0.25, clock=clock)  # one every 4 s, burst of one
    async with _http(limiter) as http:
        assert await _submit(http, 2) == [202, 429]
        clock.advance(1.5)
        refused = await http.post("/tasks", json=SUBMISSION)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "3"  # 2.5 s left, rounded up


async def test_a_client_may_submit_again_once_its_bucket_refilled(clock: FakeClock) -> None:
    limiter = RateLimit(accept, per_s=2, clock=clock)
    async with _http(limiter) as http:
        assert await _submit(http, 3) == [202, 202, 429]
        clock.advance(0.5)  # one token back
        assert await _submit(http, 2) == [202, 429]
        clock.advance(60)  # full again, but never more than one second's worth
        assert await _submit(http, 3) == [202, 202, 429]


async def test_each_token_and_each_address_has_its_own_bucket(clock: FakeClock) -> None:
    limiter = RateLimit(accept, per_s=1, clock=clock)
    async with (
        _http(limiter, "10.0.0.1", TOKEN_A) as a,
        _http(limiter, "10.0.0.1", TOKEN_B) as b,
        _http(limiter, "10.0.0.1") as anonymous,
        _http(limiter, "10.0.0.2") as elsewhere,
    ):
        assert await _submit(a, 2) == [202, 429]
        assert await _submit(b, 2) == [202, 429]
        assert await _submit(anonymous, 2) == [202, 429]
        assert await _submit(elsewhere, 2) == [202, 429]


async def test_the_same_token_shares_its_bucket_across_addresses(clock: FakeClock) -> None:
    limiter = RateLimit(accept, per_s=1, clock=clock)
    async with (
        _http(limiter, "10.0.0.1", TOKEN_A) as here,
        _http(limiter, "10.0.0.2", TOKEN_A) as there,
    ):
        assert await _submit(here) == [202]
        assert await _submit(there) == [429]


async def test_without_by_token_a_made_up_token_does_not_buy_a_fresh_bucket(
    clock: FakeClock,
) -> None:
    limiter = RateLimit(accept, per_s=1, by_token=False, clock=clock)
    async with _http(limiter, token=TOKEN_A) as a, _http(limiter, token=TOKEN_B) as b:
        assert await _submit(a) == [202]
        assert await _submit(b) == [429]


async def test_the_token_itself_is_never_kept(clock: FakeClock) -> None:
    limiter = RateLimit(accept, per_s=1, clock=clock)
    async with _http(limiter, token=TOKEN_A) as http:
        await _submit(http)
    [key] = limiter._buckets
    assert TOKEN_A not in key and key.startswith("token:")


async def test_a_batch_counts_as_one_request(clock: FakeClock) -> None:
    limiter = RateLimit(accept, per_s=1, clock=clock)
    async with _http(limiter) as http:
        batch = {"tasks": [SUBMISSION] * 50}
        assert (await http.post("/tasks/batch", json=batch)).status_code == 202
        assert (await http.post("/tasks/batch", json=batch)).status_code == 429
        assert (await http.post("/tasks", json=SUBMISSION)).status_code == 429


async def test_reads_waits_and_health_are_never_limited(clock: FakeClock) -> None:
    limiter = RateLimit(accept, per_s=1, clock=clock)
    async with _http(limiter) as http:
        assert await _submit(http, 2) == [202, 429]
        for _ in range(5):
            for path in ("/tasks", "/tasks/t-1", "/tasks/t-1/wait", "/dead-letters", "/healthz"):
                assert (await http.get(path)).status_code == 202
            assert (await http.post("/tasks/t-1/cancel")).status_code == 202


async def test_no_limit_by_default(clock: FakeClock) -> None:
    limiter = RateLimit(accept, per_s=None, clock=clock)
    async with _http(limiter) as http:
        assert set(await _submit(http, 50)) == {202}
    assert limiter._buckets == {}


async def test_idle_buckets_that_are_full_again_are_dropped(clock: FakeClock) -> None:
    limiter = RateLimit(accept, per_s=2, clock=clock)
    for number in range(5):
        async with _http(limiter, f"10.0.1.{number}") as http:
            await _submit(http)
    assert len(limiter._buckets) == 5
    clock.advance(1.0)  # two tokens a second, two at most: every bucket is full again
    async with _http(limiter, "10.0.2.1") as http:
        await _submit(http)
    assert list(limiter._buckets) == ["address:10.0.2.1"]


async def test_past_the_cap_the_least_recently_seen_client_loses_its_bucket(
    clock: FakeClock,
) -> None:
    limiter = RateLimit(accept, per_s=1, clock=clock, max_clients=3)
    for number in range(4):
        async with _http(limiter, f"10.0.1.{number}") as http:
            await _submit(http)
    assert list(limiter._buckets) == [f"address:10.0.1.{n}" for n in (1, 2, 3)]


# The real app: middleware order and the sum of outcomes under a burst.


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def backend(publisher: FakePublisher, store: TaskStore) -> Backend:
    return Backend(store, Submitter(builtin_catalog(), publisher, ["default"], store))


async def test_under_a_burst_every_request_is_accepted_or_refused_and_accepted_ones_published(
    backend: Backend, publisher: FakePublisher
) -> None:
    # One every 100 s: the burst allows exactly one, however slow the test machine is.
    app = create_app(backend, rate_limit_per_s=0.01)
    async with _http(app) as http:
        replies = await asyncio.gather(
            *(
                http.post("/tasks", json=SUBMISSION, headers={"X-Request-ID": f"r-{n}"})
                for n in range(10)
            )
        )
    codes = [reply.status_code for reply in replies]
    assert (codes.count(202), codes.count(429)) == (1, 9)
    accepted = [reply.json()["id"] for reply in replies if reply.status_code == 202]
    assert [task.id for task in publisher.published] == accepted
    for number, reply in enumerate(replies):
        assert reply.headers["X-Request-ID"] == f"r-{number}"
        if reply.status_code == 429:
            assert reply.json()["error"] == "rate_limited"
            assert 1 <= int(reply.headers["Retry-After"]) <= 100


async def test_the_real_app_limits_submissions_only(backend: Backend) -> None:
    app = create_app(backend, rate_limit_per_s=0.01)
    async with _http(app) as http:
        assert await _submit(http, 2) == [202, 429]
        batch = await http.post("/tasks/batch", json={"tasks": [SUBMISSION]})
        assert batch.status_code == 429
        assert (await http.get("/tasks")).status_code == 200
        assert (await http.get("/healthz")).status_code == 200


async def test_a_request_without_a_valid_token_gets_401_not_429(backend: Backend) -> None:
    app = create_app(backend, api_tokens=[TOKEN_A, TOKEN_B], rate_limit_per_s=0.01)
    async with (
        _http(app, token=TOKEN_A) as a,
        _http(app, token=TOKEN_B) as b,
        _http(app, token="wrong") as wrong,
    ):
        assert await _submit(a, 2) == [202, 429]
        assert await _submit(b, 2) == [202, 429]  # same address, its own token's bucket
        assert await _submit(wrong, 3) == [401, 401, 401]


async def test_the_real_app_has_no_limit_by_default(backend: Backend) -> None:
    async with _http(create_app(backend)) as http:
        assert set(await _submit(http, 20)) == {202}
