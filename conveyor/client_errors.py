"""The client's typed errors: one exception class per kind of API error reply."""

from __future__ import annotations

import builtins
from collections.abc import Sequence

import httpx
import orjson
from pydantic import BaseModel

from conveyor.shared.errors import ConveyorError, InvalidPayload


class ErrorDetail(BaseModel):
    """One problem of a rejected request: the offending field (dotted path) and why."""

    field: str = ""
    message: str = ""
    type: str = ""


class ApiError(ConveyorError):
    """The HTTP API refused a request; str() is the API's message, meant for people.

    `status` is the HTTP status (None when no response arrived), `code` the API's error code
    (`not_found`, `validation_error`, ...), `request_id` the X-Request-ID to quote in logs.
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        details: Sequence[ErrorDetail] = (),
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = list(details)
        self.request_id = request_id


class TaskNotFound(ApiError):
    """No task has that id (404)."""


class InvalidRequest(ApiError):
    """The request is malformed, too large or invalid (400, 413, 422); see `details`."""


class Unauthorized(ApiError):
    """The API wants a valid bearer token (401): set CONVEYOR_API_TOKEN."""


class Conflict(ApiError):
    """The request conflicts with an existing task (409)."""


class ServiceUnavailable(ApiError):
    """The API or its broker cannot take the request now (503, or no reply); retry later.

    `retry_after_s` is the server's Retry-After hint, when it sent one.
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        details: Sequence[ErrorDetail] = (),
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(status, code, message, details, request_id)
        self.retry_after_s = retry_after_s


class RateLimited(ServiceUnavailable):
    """This client sent more submissions than CONVEYOR_RATE_LIMIT_PER_S allows (429).

    A ServiceUnavailable, so code that backs off on `retry_after_s` handles both alike.
    """


_ERROR_CLASSES: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    404: TaskNotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
    503: ServiceUnavailable,
}


def _retry_after_s(reply: httpx.Response) -> float | None:
    try:
        return float(reply.headers["Retry-After"])
    except (KeyError, ValueError):
        return None  # absent, or an HTTP date: no hint we act on


def error_from(reply: httpx.Response) -> ApiError:
    """The typed exception for an error reply; a non-JSON body still yields one."""
    status_line = f"{reply.status_code} {reply.reason_phrase}".strip()
    code, message, details = "http_error", status_line, []
    try:
        body = orjson.loads(reply.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("error") or code)
        message = str(body.get("message") or message)
        raw_details = body.get("details")
        if isinstance(raw_details, builtins.list):
            details = [ErrorDetail.model_validate(d) for d in raw_details if isinstance(d, dict)]
    cls = _ERROR_CLASSES.get(reply.status_code, ApiError)
    request_id = reply.headers.get("X-Request-ID")
    if issubclass(cls, ServiceUnavailable):
        return cls(
            reply.status_code,
            code,
            message,
            details,
            request_id,
            retry_after_s=_retry_after_s(reply),
        )
    return cls(reply.status_code, code, message, details, request_id)


def invalid_payload(error: InvalidPayload) -> InvalidRequest:
    """A payload checked before sending, refused as the API's 422 would refuse it."""
    details = [ErrorDetail(field=f, message=m, type=t) for f, m, t in error.errors]
    return InvalidRequest(422, "invalid_payload", error.message, details)
