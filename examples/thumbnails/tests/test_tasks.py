"""The application's tasks tested with conveyor.testing: no RabbitMQ, no database."""

from __future__ import annotations

import pytest
from thumbnails.tasks import Resize, notify, resize_image

from conveyor import InvalidRequest
from conveyor.testing import InMemoryConveyor


async def test_resize_image_succeeds_with_a_result() -> None:
    async with InMemoryConveyor(tasks=["thumbnails.tasks"]) as conveyor:
        record = await conveyor.submit("resize_image", {"url": "u", "width": 64})
        assert await conveyor.drain() == 1
        done = await conveyor.get(record.id)
    assert done.status == "succeeded" and done.result["width"] == 64


async def test_the_decorated_tasks_can_be_submitted_with_models_or_keywords() -> None:
    async with InMemoryConveyor(tasks=["thumbnails.tasks"]) as conveyor:
        first = await conveyor.submit(resize_image, Resize(url="a", width=1))
        second = await conveyor.submit(notify, user_id=7)
        await conveyor.drain()
        assert (await conveyor.get(first.id)).status == "succeeded"
        assert (await conveyor.get(second.id)).result == {
            "user_id": 7,
            "message": "your thumbnail is ready",
        }


async def test_a_bad_payload_is_refused_naming_the_field() -> None:
    async with InMemoryConveyor(tasks=["thumbnails.tasks"]) as conveyor:
        with pytest.raises(InvalidRequest) as refused:
            await conveyor.submit("resize_image", {"url": "u", "width": 0})
    assert refused.value.details[0].field == "payload.width"


async def test_a_permanent_failure_fails_at_once() -> None:
    async with InMemoryConveyor(tasks=["thumbnails.tasks"]) as conveyor:
        record = await conveyor.submit(resize_image, url="forbidden:x", width=5)
        await conveyor.drain()
        failed = await conveyor.get(record.id)
    assert failed.status == "failed" and failed.attempts == 1
    assert failed.error is not None and failed.error.type == "PermanentFailure"
