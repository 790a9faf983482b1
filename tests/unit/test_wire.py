"""The wire contract: each message shape reads back what it wrote, writes exactly the bytes
deployed services of other versions exchange, and refuses garbage saying what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.shared import wire
from conveyor.shared.errors import UndecodableMessage
from conveyor.shared.records import TaskStatus
from conveyor.shared.wire import (
    CancelledSinceReply,
    CancelledSinceRequest,
    CancelNotice,
    DeadLetterNote,
    DeadLetterReason,
    RunCheckReply,
    RunCheckRequest,
    decode_check_request,
)


def test_header_names_are_the_ones_on_the_wire() -> None:
    names = {name: value for name, value in vars(wire).items() if name.startswith("HEADER_")}
    assert names == {
        "HEADER_TASK": "x-conveyor-task",
        "HEADER_ATTEMPT": "x-conveyor-attempt",
        "HEADER_VERSION": "x-conveyor-version",
        "HEADER_MAX_RETRIES": "x-conveyor-max-retries",
        "HEADER_TIMEOUT_S": "x-conveyor-timeout-s",
        "HEADER_REQUEST_ID": "x-request-id",
        "HEADER_RESENT": "x-conveyor-resent",
        "HEADER_RUNS": "x-conveyor-runs",
        "HEADER_RETRY_BASE": "x-conveyor-retry-base",
        "HEADER_QUEUED_AT": "x-conveyor-queued-at",
        "HEADER_REASON": "x-conveyor-reason",
        "HEADER_ERROR": "x-conveyor-error",
        "HEADER_DEAD_AT": "x-conveyor-dead-lettered-at",
        "HEADER_SOURCE_QUEUE": "x-conveyor-queue",
        "HEADER_DELIVERY_COUNT": "x-delivery-count",
        "HEADER_DEATHS": "x-death",
    }


def test_dead_letter_reasons_are_the_strings_on_the_wire() -> None:
    assert [reason.value for reason in DeadLetterReason] == [
        "undecodable",
        "unknown_task",
        "invalid_payload",
        "failed",
        "delivery_limit",
        "unknown",
    ]


# Each shape, as encoded today: the literal is what other deployed versions send and read.
ENCODED: list[tuple[Any, bytes]] = [
    (CancelNotice(("t-1", "t-2")), b'{"cancel":["t-1","t-2"]}'),
    (RunCheckRequest("t-1", redelivered=True), b'{"task_id":"t-1","redelivered":true}'),
    (CancelledSinceRequest(1764700000.25), b'{"cancelled_since":1764700000.25}'),
    (
        RunCheckReply("t-1", run=False, status=TaskStatus.SUCCEEDED, dead_letter=False),
        b'{"task_id":"t-1","run":false,"status":"succeeded","dead_letter":false}',
    ),
    (
        RunCheckReply("t-1", run=True, status=None, dead_letter=False),
        b'{"task_id":"t-1","run":true,"status":null,"dead_letter":false}',
    ),
    (CancelledSinceReply(("t-1",)), b'{"cancelled":["t-1"]}'),
]


@pytest.mark.parametrize(("shape", "body"), ENCODED, ids=lambda v: type(v).__name__)
def test_each_shape_encodes_to_the_pinned_bytes(shape: Any, body: bytes) -> None:
    assert shape.encode() == body


def test_control_and_replies_round_trip() -> None:
    notice = CancelNotice(("a", "b"))
    assert CancelNotice.decode(notice.encode()) == notice
    reply = RunCheckReply("t-1", run=False, status="failed", dead_letter=True)
    assert RunCheckReply.decode(reply.encode()) == reply
    cancelled = CancelledSinceReply(("a", "b"))
    assert CancelledSinceReply.decode(cancelled.encode()) == cancelled


def test_both_run_check_requests_round_trip_through_the_one_decoder() -> None:
    check = RunCheckRequest("t-1", redelivered=False)
    assert decode_check_request(check.encode()) == check
    since = CancelledSinceRequest(12.5)
    assert decode_check_request(since.encode()) == since
    assert decode_check_request(b'{"cancelled_since": 12}') == CancelledSinceRequest(12.0)


def test_a_reply_without_run_false_means_run_it() -> None:
    assert RunCheckReply.decode(b'{"task_id": "t-1"}') == RunCheckReply("t-1", run=True)
    assert RunCheckReply.decode(b'{"run": 0, "status": ""}').run is True


def test_a_dead_letter_note_round_trips_through_headers() -> None:
    note = DeadLetterNote(DeadLetterReason.FAILED, "boom", "ns.default", dead_at=1.5)
    headers = note.encode()
    assert headers == {
        "x-conveyor-reason": "failed",
        "x-conveyor-error": "boom",
        "x-conveyor-dead-lettered-at": 1.5,
        "x-conveyor-queue": "ns.default",
    }
    assert DeadLetterNote.decode({"x-conveyor-task": "echo", **headers}) == note


def test_a_dead_letter_note_cuts_long_errors() -> None:
    headers = DeadLetterNote(DeadLetterReason.FAILED, "x" * 5000).encode()
    assert len(headers["x-conveyor-error"]) == wire.MAX_ERROR_CHARS == 2000


def test_a_message_the_broker_dead_lettered_reads_its_x_death() -> None:
    deaths = [{"reason": b"delivery_limit", "queue": "ns.default"}, {"reason": "expired"}]
    note = DeadLetterNote.decode({"x-death": deaths})
    assert note == DeadLetterNote(DeadLetterReason.DELIVERY_LIMIT, "", "ns.default", None)


def test_a_dead_letter_with_garbage_headers_is_still_read() -> None:
    headers = {
        "x-conveyor-reason": 7,
        "x-conveyor-error": None,
        "x-death": "no",
        "x-conveyor-dead-lettered-at": True,
    }
    assert DeadLetterNote.decode(headers) == DeadLetterNote(DeadLetterReason.UNKNOWN)


@pytest.mark.parametrize(
    ("decode", "body", "named"),
    [
        (CancelNotice.decode, b"{not json", "control message is not valid JSON"),
        (CancelNotice.decode, b'["t-1"]', "control message is JSON list, not an object"),
        (CancelNotice.decode, b'{"cancel": "t-1"}', "no list 'cancel'"),
        (decode_check_request, b"", "run check is not valid JSON"),
        (decode_check_request, b'{"redelivered": true}', "no string 'task_id'"),
        (decode_check_request, b'{"task_id": 7}', "no string 'task_id'"),
        (decode_check_request, b'{"cancelled_since": "yesterday"}', "'cancelled_since' is not"),
        (decode_check_request, b'{"cancelled_since": true}', "'cancelled_since' is not"),
        (RunCheckReply.decode, b'"run"', "run check reply is JSON str, not an object"),
        (CancelledSinceReply.decode, b"\xff", "cancellations reply is not valid JSON"),
        (CancelledSinceReply.decode, b'{"cancelled": null}', "no list 'cancelled'"),
    ],
)
def test_decoding_garbage_raises_naming_what_is_wrong(decode: Any, body: bytes, named: str) -> None:
    with pytest.raises(UndecodableMessage, match=named) as caught:
        decode(body)
    assert named in caught.value.reason
