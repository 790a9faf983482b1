"""One place that maps Conveyor's errors to HTTP responses with a JSON body.

Every error body has the same shape:
    {"error": "<code>", "message": "<for people>", "details": [{"field", "message", "type"}]}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException

from conveyor.config import redact_text
from conveyor.shared.errors import (
    BrokerUnavailable,
    Conflict,
    InvalidPayload,
    PublishFailed,
    PublishUnconfirmed,
    ScheduleNotFound,
    StoreUnavailable,
    SubmissionError,
    TaskNotFound,
)

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5


class ErrorDetail(BaseModel):
    field: str | None = None
    message: str
    type: str


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str
    message: str
    details: list[ErrorDetail]
    task_ids: list[str] | None = None  # publish_unconfirmed only: the tasks kept


_WHEN = {
    400: "The body is not JSON (`malformed_json`).",
    401: "CONVEYOR_API_TOKENS is set and the request has no valid bearer token.",
    404: "No such task, schedule or dead letter.",
    409: "The request conflicts with the current state (see the message).",
    413: "The request body is over CONVEYOR_MAX_PAYLOAD_BYTES.",
    422: "A field or query parameter is invalid; `details` name them.",
    429: "Over CONVEYOR_RATE_LIMIT_PER_S; `Retry-After` says when to try again.",
    503: "RabbitMQ or the task store is not reachable, or a publish failed; `Retry-After`.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error status codes, each with the error body."""
    return {code: {"model": ErrorBody, "description": _WHEN[code]} for code in codes}


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": code, "message": message, "details": details or []}
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc: tuple[int | str, ...]) -> str:
    parts = [str(part) for part in loc]
    return ".".join(parts[1:] if parts and parts[0] in ("body", "query", "path") else parts)


async def _request_invalid(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = list(error.errors())
    if any(item["type"] == "json_invalid" for item in problems):
        detail = problems[0].get("ctx", {}).get("error", "")
        return error_response(400, "malformed_json", f"request body is not valid JSON: {detail}")
    if [item["loc"] for item in problems] == [("body",)]:
        return error_response(
            422,
            "validation_error",
            "request body must be a JSON object (send Content-Type: application/json)",
            [{"field": "body", "message": problems[0]["msg"], "type": problems[0]["type"]}],
        )
    details = [
        {"field": _field(item["loc"]) or "body", "message": item["msg"], "type": item["type"]}
        for item in problems
    ]
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return error_response(422, "validation_error", message, details)


async def _submission_invalid(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, SubmissionError)
    code, details = submission_error_body(error)
    return error_response(422, code, error.message, details)


def submission_error_body(error: SubmissionError) -> tuple[str, list[dict[str, str]]]:
    """The 422's error code and details for `error` (the API's, and conveyor.testing's)."""
    if isinstance(error, InvalidPayload):
        details = [
            {"field": field, "message": msg, "type": kind} for field, msg, kind in error.errors
        ]
        return "invalid_payload", details
    code = "unknown_task" if error.field.endswith("task") else "invalid_submission"
    return code, [{"field": error.field, "message": error.message, "type": error.kind}]


async def _broker_unavailable(request: Request, error: Exception) -> JSONResponse:
    log.warning("refused a request while the broker is unavailable: %s", error)
    return error_response(
        503,
        "broker_unavailable",
        "RabbitMQ is not reachable right now; retry later",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _publish_failed(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, PublishFailed)
    log.warning("%s", error)
    return error_response(
        503, "publish_failed", str(error), headers={"Retry-After": str(RETRY_AFTER_S)}
    )


async def _publish_unconfirmed(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, PublishUnconfirmed)
    log.warning("%s (kept for the outbox: %d task(s))", error, len(error.task_ids))
    message = (
        f"{len(error.task_ids)} task(s) sent but not confirmed by the broker ({error.reason}); "
        "they are kept and will be published again: follow them with GET /tasks/{id}. "
        "Other tasks of the request, if any, were not accepted. Resubmitting with the same "
        "idempotency_key returns a kept task instead of adding another."
    )
    body = {"error": "publish_unconfirmed", "message": message, "details": []}
    return JSONResponse(
        {**body, "task_ids": error.task_ids},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _conflict(request: Request, error: Exception) -> JSONResponse:
    return error_response(409, "conflict", str(error))


async def _task_not_found(request: Request, error: Exception) -> JSONResponse:
    return error_response(404, "not_found", str(error))


async def _store_unavailable(request: Request, error: Exception) -> JSONResponse:
    # Database errors can quote their connection URL: never echo them, log them redacted.
    log.warning("task store error: %s", redact_text(str(error))[:500])
    return error_response(
        503,
        "store_unavailable",
        "the task store is not reachable right now; retry later",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    return error_response(error.status_code, code, str(error.detail), headers=error.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping from exception classes to HTTP responses."""
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(SubmissionError, _submission_invalid)
    app.add_exception_handler(BrokerUnavailable, _broker_unavailable)
    app.add_exception_handler(PublishFailed, _publish_failed)
    app.add_exception_handler(PublishUnconfirmed, _publish_unconfirmed)
    app.add_exception_handler(TaskNotFound, _task_not_found)
    app.add_exception_handler(ScheduleNotFound, _task_not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(DBAPIError, _store_unavailable)
    app.add_exception_handler(HTTPException, _http_error)
