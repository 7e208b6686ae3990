"""``dashspool web``: the web UI and its JSON API (FastAPI, Jinja2 pages, a little plain
JavaScript, Leaflet served from ``static/vendor/``; docs/web.md).

:func:`create_app` builds the app for uvicorn and the tests. The ledger is opened read-only on
first use; the actions change only the spool, like the CLI's ``requeue``/``pause``/``resume``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from watchers import __version__
from watchers.config import Policies
from watchers.errors import ConfigError, NotFound, StorageUnavailable
from watchers.web.security import SecurityHeaders, content_security_policy
from watchers.web.state import WebState

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _wants_html(request: Request) -> bool:
    path = request.url.path
    return not path.startswith(("/api/", "/media/", "/metrics", "/openapi")) and (
        "text/html" in request.headers.get("accept", "")
    )


def _error(request: Request, status: int, message: str) -> Response:
    if _wants_html(request):
        from watchers.web.pages import render

        return render(request, "error.html", status_code=status, status=status, message=message)
    return JSONResponse({"detail": message}, status_code=status)


BIND_ENV = "DASHSPOOL_WEB_BIND"  # set by `dashspool web --workers N` for its worker processes


def from_environment() -> FastAPI:
    """The app as a worker process of ``dashspool web --workers N`` builds it: the settings
    from ``$DASHSPOOL_CONFIG`` and ``$DASHSPOOL_SPOOL``, the token from its own variables, the
    Host rule from the address the parent binds (``$DASHSPOOL_WEB_BIND``)."""
    import os

    from watchers.config import load
    from watchers.web.security import is_loopback, load_token

    bind = os.environ.get(BIND_ENV, "127.0.0.1")
    hosts = LOOPBACK_HOSTS if is_loopback(bind) else None
    return create_app(load(), token=load_token(), allowed_hosts=hosts)


def create_app(
    policies: Policies, *, token: str | None, allowed_hosts: tuple[str, ...] | None = None
) -> FastAPI:
    """The web app. ``token`` None: read-only (the actions answer 403). ``allowed_hosts``: the
    Host names it answers to (``dashspool web`` on loopback passes :data:`LOOPBACK_HOSTS`);
    None answers any."""
    from watchers.web import api, pages

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.web.close()

    app = FastAPI(
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load from a CDN: the document is /openapi.json
        redoc_url=None,
        title="dashspool",
        version=__version__,
        description="Trips, clips, plates and detections from the dashspool ledger, the "
        "pipeline's status, and the operator's actions (those need the token). docs/web.md.",
    )
    app.state.web = WebState(policies, token)
    app.add_middleware(
        SecurityHeaders, csp=content_security_policy(policies.web.tile_url), hosts=allowed_hosts
    )
    app.include_router(api.router)
    app.include_router(pages.router)
    if not (STATIC / "vendor" / "leaflet" / "leaflet.js").is_file():
        log.warning("%s has no Leaflet: run `make web-assets` (maps will not show)", STATIC)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus metrics (watchers/metrics.py)."""
        try:
            from watchers import metrics as prom
        except ImportError:
            return Response(
                "/metrics is not available yet: watchers/metrics.py is missing\n",
                status_code=503,
                media_type="text/plain",
            )
        body, content_type = prom.exposition(policies, datetime.now(timezone.utc))
        return Response(body, media_type=content_type)

    @app.exception_handler(NotFound)
    def not_found(request: Request, exc: NotFound) -> Response:
        return _error(request, 404, str(exc))

    @app.exception_handler(ConfigError)
    def unavailable(request: Request, exc: ConfigError) -> Response:
        return _error(request, 503, str(exc).splitlines()[0])

    @app.exception_handler(StorageUnavailable)
    def storage(request: Request, exc: StorageUnavailable) -> Response:
        return _error(request, 503, str(exc))

    @app.exception_handler(ValueError)
    def bad_value(request: Request, exc: ValueError) -> Response:
        return _error(request, 422, str(exc))

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _wants_html(request):
            return _error(request, exc.status_code, str(exc.detail))
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> Response:
        if _wants_html(request):
            return _error(request, 422, "; ".join(str(e.get("msg")) for e in exc.errors()))
        from fastapi.encoders import jsonable_encoder

        return JSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)

    return app


__all__ = ["LOOPBACK_HOSTS", "create_app"]
