"""The dashboard: a single page at `/` (static files from api/dashboard/) that reads only the REST API and the
live event stream, plus `GET /dashboard/info`, what the page needs to know about this server.

The page and its assets carry a Content-Security-Policy that allows nothing but this server, so a library
that tried to reach a CDN would fail loudly in the browser tests rather than work only when online.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.types import Receive, Scope, Send

from api.deps import SettingsDep
from api.routes import insights

DASHBOARD_DIR = Path(__file__).resolve().parents[1] / "dashboard"
ASSETS_URL = "/dashboard/assets"
# Scripts and styles from this server only (ECharts and Cytoscape set inline styles on what they draw).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
RAY_DASHBOARD_PORT = 8265  # Ray's default; a cluster's head node serves its dashboard there

router = APIRouter(tags=["dashboard"])


@router.get("/", include_in_schema=False)
def dashboard_page() -> FileResponse:
    return FileResponse(
        DASHBOARD_DIR / "index.html",
        media_type="text/html",
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
    )


class DashboardInfo(BaseModel):
    writes_need_token: bool = Field(description="submit, cancel and resume need 'Authorization: Bearer <token>'")
    ray_dashboard: str | None = Field(
        description="the Ray dashboard of the cluster this server joins (its head node, Ray's default port); "
        "null for the embedded local Ray, which runs without one"
    )


@router.get("/dashboard/info", response_model=DashboardInfo)
def dashboard_info(settings: SettingsDep) -> DashboardInfo:
    """What the dashboard shows about this server: whether writes need a token, and where Ray's own dashboard is."""
    return DashboardInfo(writes_need_token=settings.api_token is not None, ray_dashboard=_ray_dashboard(settings))


def _ray_dashboard(settings: SettingsDep) -> str | None:
    address = settings.ray_address
    if not address or address in ("auto", "local"):
        return None
    # "host:6379" (a GCS) or "ray://host:10001" (Ray Client): the head node's host either way.
    host = urlsplit(address if "://" in address else f"//{address}").hostname
    return None if host is None else f"http://{host}:{RAY_DASHBOARD_PORT}"


class _Assets(StaticFiles):
    """The dashboard's files, with the page's Content-Security-Policy and revalidated on each load (a new
    version of the service must not run last version's scripts)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"cache-control", b"no-cache"),
                ]
            await send(message)

        await super().__call__(scope, receive, with_headers)


def install_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at `/`, its assets, and the aggregated routes it reads."""
    app.include_router(insights.router)
    app.include_router(router)
    app.mount(ASSETS_URL, _Assets(directory=DASHBOARD_DIR), name="dashboard-assets")
