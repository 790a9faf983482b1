"""The task catalog: lookups, payload validation errors naming fields, test-only tasks."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from conveyor.shared.catalog import Catalog, TaskSpec
from conveyor.shared.errors import InvalidPayload, UnknownTask
from tests.support import builtin_catalog


def test_builtin_catalog_has_the_documented_tasks() -> None:
    assert set(builtin_catalog()) == {"echo", "sleep", "fail", "cpu", "send_email"}
    assert "crash" in builtin_catalog(test_tasks=True)


def test_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(UnknownTask) as caught:
        builtin_catalog().spec("nope")
    assert caught.value.field == "task"
    assert "echo" in caught.value.message and "crash" not in caught.value.message


def test_invalid_payload_names_every_bad_field() -> None:
    with pytest.raises(InvalidPayload) as caught:
        builtin_catalog().validate_payload("send_email", {"to": "not-an-address", "body": 1})
    fields = [field for field, _, _ in caught.value.errors]
    assert fields == ["payload.to", "payload.subject", "payload.body"]


def test_unknown_payload_field_is_an_error_not_ignored() -> None:
    with pytest.raises(InvalidPayload, match=r"payload\.secs"):
        builtin_catalog().validate_payload("sleep", {"seconds": 1, "secs": 2})


def test_valid_payload_gets_defaults() -> None:
    payload = builtin_catalog().validate_payload("fail", {})
    assert payload.model_dump() == {
        "message": "failed on purpose",
        "times": None,
        "permanent": False,
        "retry_after_s": None,
    }


def test_a_task_name_registered_twice_is_refused() -> None:
    class Empty(BaseModel):
        pass

    with pytest.raises(ValueError, match="twice"):
        Catalog([TaskSpec("a", Empty), TaskSpec("a", Empty)])
