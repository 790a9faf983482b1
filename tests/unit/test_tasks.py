"""@task and the task loader: payload models found or derived, options, errors naming the
module, task and reason."""

from __future__ import annotations

import pickle
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from conveyor.shared.errors import InvalidPayload
from conveyor.shared.task_loader import TaskDefaults, TaskLoadError, catalog_of, load_tasks
from conveyor.shared.tasks import Task, TaskContext, TaskDefinitionError, task


class Resize(BaseModel):
    url: str
    width: int = Field(gt=0, le=10_000)


@task(queue="images", max_retries=5, timeout_s=120, description="Resizes an image.")
def resize_image(payload: Resize, ctx: TaskContext) -> dict[str, Any]:
    return {"width": payload.width, "task_id": ctx.task_id}


@task
async def notify(user_id: int, message: str = "hi") -> str:
    """Tells a user something."""
    return f"{user_id}:{message}"


CTX = TaskContext("id-1", "x", 1, "w-1", "req-1")


def test_a_model_parameter_is_the_payload_and_the_options_are_kept() -> None:
    assert isinstance(resize_image, Task) and resize_image.name == "resize_image"
    assert resize_image.payload_model is Resize and not resize_image.is_async
    spec = resize_image.spec("default", 3, 300)
    assert (spec.queue, spec.max_retries, spec.timeout_s) == ("images", 5, 120)
    assert spec.description == "Resizes an image."
    assert resize_image.run({"url": "u", "width": 64}, CTX) == {"width": 64, "task_id": "id-1"}


async def test_typed_parameters_derive_a_strict_payload_model() -> None:
    assert notify.is_async and notify.description == "Tells a user something."
    assert set(notify.payload_model.model_fields) == {"user_id", "message"}
    assert await notify.run({"user_id": 7}, CTX) == "7:hi"
    with pytest.raises(InvalidPayload) as caught:
        notify.payload(user_id="seven")
    assert caught.value.field == "payload.user_id"
    with pytest.raises(InvalidPayload, match=r"payload\.extra"):
        notify.payload(user_id=1, extra=True)


async def test_the_decorated_function_stays_a_plain_function() -> None:
    assert await notify(3, "yo") == "3:yo"
    assert resize_image(Resize(url="u", width=2), CTX)["width"] == 2
    assert notify.__name__ == "notify" and notify.__doc__ == "Tells a user something."


def test_unset_options_come_from_the_defaults() -> None:
    catalog = catalog_of({"notify": notify}, TaskDefaults("bulk", 7, 42.0))
    spec = catalog.spec("notify")
    assert (spec.queue, spec.max_retries, spec.timeout_s) == ("bulk", 7, 42.0)


def test_a_task_pickles_by_reference() -> None:
    assert pickle.loads(pickle.dumps(resize_image)) is resize_image
    assert pickle.loads(pickle.dumps(notify.run)).__self__ is notify


@pytest.mark.parametrize(
    ("define", "reason"),
    [
        (lambda: task(len), "needs a function"),
        (lambda: task(_untyped), "parameter 'x' has no type annotation"),
        (lambda: task(_star_args), "\\*args and \\*\\*kwargs"),
        (lambda: task(_two_models), "one payload"),
        (lambda: task(max_retries=-1)(_fine), "max_retries must be 0 to 100"),
        (lambda: task(queue="bad queue")(_fine), "may hold only letters"),
    ],
)
def test_a_function_that_cannot_be_a_task_is_refused_naming_why(
    define: Callable[[], Task], reason: str
) -> None:
    with pytest.raises(TaskDefinitionError, match=reason):
        define()


def _untyped(x) -> None:  # type: ignore[no-untyped-def]
    pass


def _star_args(*numbers: int) -> None:
    pass


def _two_models(a: Resize, b: Resize) -> None:
    pass


def _fine(n: int) -> None:
    pass


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Write throwaway modules importable by name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(name: str, source: str) -> None:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)

    yield write
    for name in written:
        sys.modules.pop(name, None)


HEADER = "from conveyor import task\n"


def test_loader_finds_each_task_once_even_when_reexported(modules: Callable[..., None]) -> None:
    modules("lt_a", HEADER + "@task\nasync def one(n: int) -> int:\n    return n\n")
    modules(
        "lt_b",
        "from lt_a import one\nfrom conveyor import task\n"
        "@task\nasync def two(n: int) -> int:\n    return n\n",
    )
    assert set(load_tasks(["lt_a", "lt_b"])) == {"one", "two"}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "cannot import module 'lt_missing': ModuleNotFoundError"),
        ({"lt_missing": "x = 1\n"}, "module 'lt_missing' defines no task"),
        ({"lt_missing": "raise RuntimeError('boom')\n"}, "RuntimeError: boom"),
        (
            {"lt_missing": HEADER + "@task\ndef bad(x):\n    pass\n"},
            "module 'lt_missing': task 'bad': parameter 'x' has no type annotation",
        ),
        (
            {
                "lt_missing": HEADER + "@task(name='same')\nasync def a(n: int) -> None: ...\n"
                "@task(name='same')\nasync def b(n: int) -> None: ...\n"
            },
            "task 'same' is defined twice",
        ),
    ],
)
def test_loader_errors_name_the_module_task_and_reason(
    modules: Callable[..., None], files: dict[str, str], message: str
) -> None:
    for name, source in files.items():
        modules(name, source)
    with pytest.raises(TaskLoadError, match=message):
        load_tasks(["lt_missing"])
