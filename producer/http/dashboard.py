"""The live dashboard at `/`: one HTML page, its script and its stylesheet, as package data.

No build step and nothing from the internet: plain files under `producer/http/static/`, read once
when the app is made. They hold no data, so they load without a token (`DASHBOARD_PATHS`
are open in `guards`); the script then polls the JSON API every two seconds with the
token the user typed in, kept in the browser's localStorage.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files

from fastapi import APIRouter, Response

# path -> (file under producer/http/static/, media type)
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
DASHBOARD_PATHS = frozenset(ASSETS)

# The page runs only its own script and style and talks only to this origin: task payloads
# are user data, and even if one slipped into markup it could neither run nor phone out.
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


def read_asset(name: str) -> bytes:
    """One of the dashboard's files, from the installed package."""
    return (files("conveyor.producer.http") / "static" / name).read_bytes()


def dashboard_routes() -> APIRouter:
    """`GET /` (the page) and its two static files; left out of the OpenAPI schema."""
    router = APIRouter(include_in_schema=False)
    for path, (name, media_type) in ASSETS.items():
        router.add_api_route(path, _serve(read_asset(name), media_type), methods=["GET"])
    return router


def _serve(body: bytes, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def serve() -> Response:
        return Response(body, media_type=media_type, headers=_HEADERS)

    return serve
