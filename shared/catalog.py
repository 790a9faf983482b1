"""The task catalog: task name -> payload model, target queue and defaults.

The producer validates submissions against it; the consumer looks handlers up by the same
names, so both sides agree on what a task is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from conveyor.shared.errors import InvalidPayload, UnknownTask

DEFAULT_QUEUE = "default"


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What a task type is: its payload model and the defaults a submission may override."""

    name: str
    payload_model: type[BaseModel]
    queue: str = DEFAULT_QUEUE
    max_retries: int = 3
    timeout_s: float = 300.0
    description: str = ""


class Catalog(Mapping[str, TaskSpec]):
    """A read-only registry of task specs, keyed by task name."""

    def __init__(self, specs: Iterable[TaskSpec]) -> None:
        self._specs: dict[str, TaskSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"task {spec.name!r} is registered twice")
            self._specs[spec.name] = spec

    def __getitem__(self, name: str) -> TaskSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    @property
    def queues(self) -> frozenset[str]:
        """Every queue some task targets by default."""
        return frozenset(spec.queue for spec in self._specs.values())

    def spec(self, name: str) -> TaskSpec:
        """The spec of task `name`, or UnknownTask naming the tasks that exist."""
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(sorted(self._specs))
            raise UnknownTask(
                f"unknown task {name!r}; known tasks: {known}", field="task"
            ) from None

    def validate_payload(self, name: str, payload: Any) -> BaseModel:
        """The payload parsed into the task's model, or InvalidPayload naming each bad field."""
        model = self.spec(name).payload_model
        try:
            return model.model_validate(payload)
        except ValidationError as error:
            raise InvalidPayload.of(name, payload_problems(error)) from None


def payload_problems(error: ValidationError) -> list[tuple[str, str, str]]:
    """(field, message, type) of each bad field, fields named from the body: `payload.x`."""
    return [
        (".".join(["payload", *(str(part) for part in item["loc"])]), item["msg"], item["type"])
        for item in error.errors()
    ]
