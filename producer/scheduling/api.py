"""HTTP routes of cron schedules: list, read, create or replace, delete, pause, resume."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Path, Query, Response, status

from conveyor.producer.http.errors import error_responses
from conveyor.producer.scheduling.desk import ScheduleDesk, SchedulePage, ScheduleView
from conveyor.producer.scheduling.schedules import NAME_PATTERN, ScheduleDefinition
from conveyor.shared.errors import BrokerUnavailable

MAX_LIST_LIMIT = 500

Name = Annotated[str, Path(pattern=NAME_PATTERN, description="The schedule's name.")]


class ScheduleBackend(Protocol):
    """What the routes need from the producer service (None until it is set up)."""

    @property
    def schedules(self) -> ScheduleDesk | None: ...


def schedule_routes(backend: ScheduleBackend) -> APIRouter:
    """Routes over the backend's schedule desk (503 until the service is set up)."""
    router = APIRouter(tags=["schedules"])

    def desk() -> ScheduleDesk:
        if backend.schedules is None:
            raise BrokerUnavailable("not connected to RabbitMQ")
        return backend.schedules

    @router.get("/schedules", response_model=SchedulePage)
    async def list_schedules(
        limit: Annotated[int, Query(ge=1, description=f"At most {MAX_LIST_LIMIT}.")] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> SchedulePage:
        """Schedules by name, each with its next run times; `leader` is the replica that
        fires them."""
        return await desk().page(min(limit, MAX_LIST_LIMIT), cursor)

    @router.get("/schedules/{name}", response_model=ScheduleView, responses=error_responses(404))
    async def get_schedule(name: Name) -> ScheduleView:
        """One schedule with its next run times."""
        return await desk().get(name)

    @router.put(
        "/schedules/{name}",
        status_code=status.HTTP_200_OK,
        response_model=ScheduleView,
        responses={201: {"description": "Created."}, **error_responses(400, 409, 413)},
    )
    async def put_schedule(name: Name, body: ScheduleDefinition, response: Response) -> Any:
        """Create (201) or replace (200) a schedule; 422 naming the field if the cron
        expression, time zone, task, payload or queue is wrong."""
        view, created = await desk().put(name, body)
        if created:
            response.status_code = status.HTTP_201_CREATED
        return view

    @router.delete(
        "/schedules/{name}",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=error_responses(404, 409),
    )
    async def delete_schedule(name: Name) -> Response:
        """Delete a schedule; tasks it fired already stay."""
        await desk().delete(name)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.post(
        "/schedules/{name}/pause", response_model=ScheduleView, responses=error_responses(404)
    )
    async def pause_schedule(name: Name) -> ScheduleView:
        """Stop firing until resumed."""
        return await desk().set_paused(name, True)

    @router.post(
        "/schedules/{name}/resume", response_model=ScheduleView, responses=error_responses(404)
    )
    async def resume_schedule(name: Name) -> ScheduleView:
        """Fire again from now on; ticks that fell while paused are not fired."""
        return await desk().set_paused(name, False)

    return router
