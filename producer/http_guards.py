"""ASGI middleware in front of the API: request ids, the body size limit and bearer tokens.

Plain ASGI rather than Starlette's BaseHTTPMiddleware: they run on every request, and this
form costs a function call, not an extra task and a copied body.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Collection

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer.errors import error_response

REQUEST_ID_HEADER = "X-Request-ID"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})


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
    """With tokens configured, every path but the health probes needs one of them."""

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
