"""ASGI middleware in front of the API: request ids, bearer tokens, rate limits, body size.

Plain ASGI rather than Starlette's BaseHTTPMiddleware: they run on every request, and this
form costs a function call, not an extra task and a copied body.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.producer.http.dashboard import DASHBOARD_PATHS
from conveyor.producer.http.errors import error_response
from conveyor.shared.logs import log_context

REQUEST_ID_HEADER = "X-Request-ID"
# The dashboard's page and files hold no data: they load without a token, then ask for one.
OPEN_PATHS = frozenset({"/healthz", "/readyz", *DASHBOARD_PATHS})
SUBMISSION_PATHS = frozenset({"/tasks", "/tasks/batch"})
# Clients with a bucket at once; past it the least recently seen client's bucket goes.
MAX_RATE_LIMITED_CLIENTS = 10_000


class RequestId:
    """Takes `X-Request-ID` from the request (or makes one) and echoes it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = (Headers(scope=scope).get(REQUEST_ID_HEADER) or uuid.uuid4().hex)[:200]
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with log_context(request_id=request_id):  # on every log line the request causes
            await self.app(scope, receive, send_with_id)


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuses request bodies over `max_bytes` with 413, by Content-Length or as they stream."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "payload_too_large",
            f"request body is larger than CONVEYOR_MAX_PAYLOAD_BYTES={self.max_bytes} bytes",
            [{"field": "body", "message": "too large", "type": "too_large"}],
        )
        await response(scope, receive, send)


class BearerAuth:
    """With tokens configured, every path but the health probes and the dashboard's page
    needs one of them."""

    def __init__(self, app: ASGIApp, tokens: Collection[str]) -> None:
        self.app = app
        self.tokens = [token.encode() for token in tokens]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.tokens or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        scheme, _, presented = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self._accepts(presented.strip().encode()):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401,
            "unauthorized",
            "missing or invalid API token: send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)

    def _accepts(self, presented: bytes) -> bool:
        # Compare with every token, in constant time each: no early exit to time.
        matches = [hmac.compare_digest(presented, token) for token in self.tokens]
        return any(matches)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_at: float


class RateLimit:
    """Per-client token buckets on submissions: past `per_s` a second, 429 with Retry-After.

    Only `POST /tasks` and `POST /tasks/batch` count, one token per request: a batch is one
    request whatever its size (CONVEYOR_MAX_BATCH_SIZE bounds that), and reads, waits and
    health probes are never limited. A client may burst one second's worth (at least one
    request), then `per_s` a second. A client is its bearer token when `by_token` (stored
    as a keyed hash, never the token), else its address: behind a proxy that is the proxy's,
    unless uvicorn is told to trust its X-Forwarded-For. `per_s=None` turns the limit off.

    Memory stays bounded: a bucket idle long enough to be full again is dropped (a missing
    bucket is a full one), and past MAX_RATE_LIMITED_CLIENTS the least recently seen goes.
    """

    def __init__(
        self,
        app: ASGIApp,
        per_s: float | None,
        *,
        by_token: bool = True,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_RATE_LIMITED_CLIENTS,
    ) -> None:
        self.app = app
        self.per_s = per_s
        self.capacity = max(1.0, per_s or 0.0)
        self.by_token = by_token
        self.clock = clock
        self.max_clients = max_clients
        # Least recently seen first: the sweep and the cap both take from the front.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._hash_key = secrets.token_bytes(16)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.per_s is None
            or scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in SUBMISSION_PATHS
        ):
            await self.app(scope, receive, send)
            return
        wait_s = self._take(self._client_key(scope), self.per_s)
        if wait_s is None:
            await self.app(scope, receive, send)
            return
        retry_after_s = max(1, math.ceil(wait_s))
        response = error_response(
            429,
            "rate_limited",
            f"more than {self.per_s:g} submissions a second from this client "
            f"(CONVEYOR_RATE_LIMIT_PER_S); retry in {retry_after_s} s",
            headers={"Retry-After": str(retry_after_s)},
        )
        await response(scope, receive, send)

    def _client_key(self, scope: Scope) -> str:
        if self.by_token:
            scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                digest = hashlib.blake2b(
                    token.strip().encode(), key=self._hash_key, digest_size=16
                ).hexdigest()
                return f"token:{digest}"
        client = scope.get("client")
        return f"address:{client[0] if client else 'unknown'}"

    def _take(self, key: str, per_s: float) -> float | None:
        """Take one token from `key`'s bucket: None if there was one, else seconds to wait."""
        now = self.clock()
        self._sweep(now, per_s)
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(self.capacity, now)
        else:
            elapsed_s = max(0.0, now - bucket.updated_at)
            bucket.tokens = min(self.capacity, bucket.tokens + elapsed_s * per_s)
            bucket.updated_at = now
        self._buckets[key] = bucket  # to the back: the most recently seen
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / per_s

    def _sweep(self, now: float, per_s: float) -> None:
        # Buckets are in order of last use, and any bucket is full again `capacity / per_s`
        # after its last use: drop from the front until one is too recent.
        refill_s = self.capacity / per_s
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            if now - oldest.updated_at < refill_s:
                return
            del self._buckets[key]
