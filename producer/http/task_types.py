"""What tasks exist: `GET /task-types`, and the OpenAPI document of `POST /tasks` with each
task's payload schema (a union keyed by `task`), so `/docs` shows every task's fields."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, create_model
from pydantic.json_schema import models_json_schema

from conveyor.producer.submission.submitter import TaskSubmission
from conveyor.producer.workers.store import WorkerStore
from conveyor.shared.catalog import Catalog, TaskSpec
from conveyor.shared.errors import StoreUnavailable
from conveyor.shared.records import TaskTypePage, TaskTypeView

BEARER_SCHEME = "bearerAuth"


def task_type_routes(catalog: Catalog, workers: Callable[[], WorkerStore | None]) -> APIRouter:
    router = APIRouter(tags=["tasks"])

    @router.get("/task-types", response_model=TaskTypePage)
    async def list_task_types() -> TaskTypePage:
        """Every task this producer accepts, with the online workers that serve it."""
        store = workers()
        if store is None:
            raise StoreUnavailable("the task store is not open yet")
        online = [view for view in await store.list() if view.state == "online"]
        return TaskTypePage(
            items=[
                _view(spec, sum(spec.name in worker.tasks for worker in online))
                for spec in sorted(catalog.values(), key=lambda spec: spec.name)
            ]
        )

    return router


def _view(spec: TaskSpec, workers: int) -> TaskTypeView:
    return TaskTypeView(
        name=spec.name,
        queue=spec.queue,
        max_retries=spec.max_retries,
        timeout_s=spec.timeout_s,
        description=spec.description,
        payload_schema=spec.payload_model.model_json_schema(),
        workers=workers,
    )


def document_tasks(app: FastAPI, catalog: Catalog, tokens_required: bool) -> None:
    """Make `app.openapi()` describe POST /tasks per task and declare the bearer scheme.

    The route itself keeps reading a generic TaskSubmission, so a bad payload still gets
    Conveyor's own 422 naming `payload.<field>`, not a union's many alternatives.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})[BEARER_SCHEME] = {
            "type": "http",
            "scheme": "bearer",
            "description": "One of CONVEYOR_API_TOKENS (when the producer has any).",
        }
        if tokens_required:
            schema["security"] = [{BEARER_SCHEME: []}]
        if catalog:
            _document_submissions(schema, catalog)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_submissions(schema: dict[str, Any], catalog: Catalog) -> None:
    models = {name: _submission_model(spec) for name, spec in sorted(catalog.items())}
    keyed, definitions = models_json_schema(
        [(model, "validation") for model in models.values()],
        ref_template="#/components/schemas/{model}",
    )
    schema["components"].setdefault("schemas", {}).update(definitions.get("$defs", {}))
    refs = {name: keyed[(model, "validation")]["$ref"] for name, model in models.items()}
    body = {
        "oneOf": [{"$ref": ref} for ref in refs.values()],
        "discriminator": {"propertyName": "task", "mapping": refs},
    }
    operation = schema["paths"]["/tasks"]["post"]
    operation["requestBody"]["content"]["application/json"]["schema"] = body


def _submission_model(spec: TaskSpec) -> type[BaseModel]:
    """TaskSubmission for one task: `task` fixed to its name, `payload` its model."""
    fields: dict[str, Any] = {
        name: (info.annotation, info)
        for name, info in TaskSubmission.model_fields.items()
        if name not in {"task", "payload"}
    }
    fields["task"] = (Literal[spec.name], ...)
    fields["payload"] = (spec.payload_model, ...)
    return create_model(
        f"Submit_{spec.name}", __doc__=spec.description or f"Submit task {spec.name!r}.", **fields
    )
