"""`@task`: a function in the user's own module becomes a task type.

The payload model is the parameter annotated with a pydantic model, or else one derived from
the typed parameters (as FastAPI derives a request body); a `TaskContext` parameter, found by
its annotation, receives the run's context. `async def` runs on the consumer's event loop,
plain `def` in a child process. The decorated object stays callable as the plain function.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from conveyor.shared.catalog import TaskSpec, payload_problems
from conveyor.shared.errors import ConveyorError, InvalidPayload

TASK_NAME_MAX_LENGTH = 200


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a handler may know about the run it is part of."""

    task_id: str
    task: str
    attempt: int
    worker: str
    request_id: str | None = None


class TaskDefinitionError(ConveyorError):
    """A function `@task` cannot turn into a task; the message names the task and why."""


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """The options a task sets itself; None: the service's default (CONVEYOR_DEFAULT_*)."""

    queue: str | None = None
    max_retries: int | None = None
    timeout_s: float | None = None


class DerivedPayload(BaseModel):
    """Base of payload models derived from typed parameters: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Task:
    """A task type made by `@task`: its name, payload model and options, and the function.

    Calling it calls the function unchanged. `run(payload, ctx)` is how a consumer calls it.
    It pickles by reference (module and name), so a sync task reaches a child process as
    "import this module, take this task": the child never sees the parent's `__main__`.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        timeout_s: float | None = None,
        description: str | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.is_async = inspect.iscoroutinefunction(fn)
        self.options = TaskOptions(queue, max_retries, timeout_s)
        self.description = description if description is not None else _summary(fn)
        self._check_options()
        self.payload_model, self._payload_arg, self._context_arg, self._fields = _signature_of(
            fn, self.name
        )
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<task {self.name!r} of {self.fn.__module__}>"

    def __reduce__(self) -> tuple[Callable[[str, str], Task], tuple[str, str]]:
        return find_task, (self.fn.__module__, self.fn.__qualname__)

    def spec(self, queue: str, max_retries: int, timeout_s: float) -> TaskSpec:
        """This task's spec, its unset options taken from the defaults given."""
        return TaskSpec(
            self.name,
            self.payload_model,
            queue=self.options.queue or queue,
            max_retries=self.options.max_retries
            if self.options.max_retries is not None
            else max_retries,
            timeout_s=self.options.timeout_s or timeout_s,
            description=self.description,
        )

    def payload(self, model: BaseModel | None = None, /, **fields: Any) -> BaseModel:
        """The validated payload from a model or keyword fields; InvalidPayload names the
        field, as the HTTP API's 422 does."""
        if model is not None and fields:
            raise TypeError("give the payload as a model or as keyword fields, not both")
        data: Any = model if model is not None else fields
        if isinstance(data, BaseModel) and not isinstance(data, self.payload_model):
            data = data.model_dump()
        try:
            return self.payload_model.model_validate(data)
        except ValidationError as error:
            raise InvalidPayload.of(self.name, payload_problems(error)) from None

    def run(self, payload: BaseModel | dict[str, Any], ctx: TaskContext) -> Any:
        """Call the function the way its signature asks (a dict is validated first: that is
        how a payload reaches a child process)."""
        if not isinstance(payload, BaseModel):
            payload = self.payload_model.model_validate(payload)
        kwargs: dict[str, Any]
        if self._payload_arg is not None:
            kwargs = {self._payload_arg: payload}
        else:
            kwargs = {name: getattr(payload, name) for name in self._fields}
        if self._context_arg is not None:
            kwargs[self._context_arg] = ctx
        return self.fn(**kwargs)

    def _check_options(self) -> None:
        if not self.name or len(self.name) > TASK_NAME_MAX_LENGTH:
            raise TaskDefinitionError(
                f"task {self.name!r}: a name has 1 to {TASK_NAME_MAX_LENGTH} characters"
            )
        queue, max_retries, timeout_s = (
            self.options.queue,
            self.options.max_retries,
            self.options.timeout_s,
        )
        if queue is not None and not queue.replace("_", "").replace("-", "").isalnum():
            raise TaskDefinitionError(
                f"task {self.name!r}: queue {queue!r} may hold only letters, digits, _ and -"
            )
        if max_retries is not None and not 0 <= max_retries <= 100:
            raise TaskDefinitionError(f"task {self.name!r}: max_retries must be 0 to 100")
        if timeout_s is not None and not 0 < timeout_s <= 86_400:
            raise TaskDefinitionError(f"task {self.name!r}: timeout_s must be > 0 and <= 86400")


@overload
def task(fn: Callable[..., Any], /) -> Task: ...
@overload
def task(
    *,
    name: str | None = None,
    queue: str | None = None,
    max_retries: int | None = None,
    timeout_s: float | None = None,
    description: str | None = None,
) -> Callable[[Callable[..., Any]], Task]: ...
def task(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    queue: str | None = None,
    max_retries: int | None = None,
    timeout_s: float | None = None,
    description: str | None = None,
) -> Task | Callable[[Callable[..., Any]], Task]:
    """Make `fn` a task: `@task`, or `@task(name=, queue=, max_retries=, timeout_s=,
    description=)`. Options left out come from the services' CONVEYOR_DEFAULT_* settings."""

    def make(function: Callable[..., Any]) -> Task:
        return Task(
            function,
            name=name,
            queue=queue,
            max_retries=max_retries,
            timeout_s=timeout_s,
            description=description,
        )

    return make if fn is None else make(fn)


def find_task(module: str, qualname: str) -> Task:
    """The task `qualname` of `module`, imported by name (how a child process gets it)."""
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not isinstance(found, Task):
        raise TaskDefinitionError(f"{module}.{qualname} is not a task")
    return found


def _summary(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _signature_of(
    fn: Callable[..., Any], name: str
) -> tuple[type[BaseModel], str | None, str | None, tuple[str, ...]]:
    """(payload model, its parameter or None if derived, the context parameter, the fields)."""
    if not inspect.isfunction(inspect.unwrap(fn)):
        raise TaskDefinitionError(f"task {name!r}: @task needs a function, got {fn!r}")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as error:
        raise TaskDefinitionError(
            f"task {name!r}: cannot resolve its type annotations: {error}"
        ) from None
    models: dict[str, type[BaseModel]] = {}
    context_arg = None
    fields: dict[str, Any] = {}
    for parameter in inspect.signature(fn).parameters.values():
        annotation = _annotation_of(parameter, hints, name)
        if annotation is TaskContext:
            context_arg = parameter.name
        elif inspect.isclass(annotation) and issubclass(annotation, BaseModel):
            models[parameter.name] = annotation
        else:
            default = ... if parameter.default is parameter.empty else parameter.default
            fields[parameter.name] = (annotation, default)
    if models:
        if len(models) > 1 or fields:
            raise TaskDefinitionError(
                f"task {name!r}: a task has one payload: either one pydantic-model parameter "
                f"or typed fields, not {', '.join(map(repr, [*models, *fields]))}"
            )
        [(payload_arg, model)] = models.items()
        return model, payload_arg, context_arg, ()
    try:
        derived = create_model(f"{_camel(name)}Payload", __base__=DerivedPayload, **fields)
    except Exception as error:
        raise TaskDefinitionError(f"task {name!r}: cannot derive its payload: {error}") from None
    derived.__doc__ = f"The payload of task {name!r}, derived from its parameters."
    return derived, None, context_arg, tuple(fields)


def _annotation_of(parameter: inspect.Parameter, hints: dict[str, Any], name: str) -> Any:
    """The parameter's resolved annotation, or why it cannot be a payload field."""
    if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
        raise TaskDefinitionError(
            f"task {name!r}: parameter {parameter.name!r}: *args and **kwargs cannot be "
            "payload fields; name each field"
        )
    if parameter.kind is parameter.POSITIONAL_ONLY:
        raise TaskDefinitionError(
            f"task {name!r}: parameter {parameter.name!r} is positional-only; "
            "payload fields are passed by name"
        )
    if parameter.name not in hints:
        raise TaskDefinitionError(
            f"task {name!r}: parameter {parameter.name!r} has no type annotation "
            "(the payload is validated by the types)"
        )
    return hints[parameter.name]


def _camel(name: str) -> str:
    parts = "".join(c if c.isalnum() else " " for c in name).split()
    return "".join(part[:1].upper() + part[1:] for part in parts) or "Task"
