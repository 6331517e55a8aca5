"""The ASGI application: Starlette routes (``routes.py``) behind middleware, outermost first: metrics (counts
every answer, refusals included), CORS (only when origins are given), the API key, the body limit. Errors
become one-line JSON answers: ``{"error": "..."}`` with a 4xx for anything the client did, 500 only for a
bug (the server logs its traceback and goes on). A client gone before its body arrived (or whose connection the
protocol refused mid-body) is counted as 499, nginx's "client closed request", not as a bug."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from ..common.errors import DetzooError
from ..predict import Predictor
from .errors import status_for
from .metrics import MetricsMiddleware
from .middleware import ApiKey, BodyLimit
from .routes import ROUTES
from .service import Service
from .settings import ServeSettings

CLIENT_CLOSED_REQUEST = 499


async def _user_error(request: Request, exc: DetzooError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=status_for(exc), headers=getattr(exc, "headers", None))


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _client_gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
    """Nobody reads this answer (uvicorn drops it); it only labels the request in /metrics."""
    return JSONResponse({"error": "the client closed the connection before its request was read"},
                        status_code=CLIENT_CLOSED_REQUEST)


async def _bug(request: Request, exc: Exception) -> JSONResponse:
    """Starlette re-raises the exception after this answer, so the server (uvicorn) logs its traceback."""
    return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)


def create_app(predictor: Predictor, settings: ServeSettings | None = None, source: str | Path = "model") -> Starlette:
    """The service for one loaded Predictor. ``source`` is the model file's name, shown by /v1/models."""
    settings = settings or ServeSettings()
    service = Service(predictor, settings, source)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await service.start()
        yield
        await service.stop()

    middleware = [Middleware(MetricsMiddleware, metrics=service.metrics, routes=ROUTES)]
    if settings.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                                     allow_methods=["GET", "POST"],
                                     allow_headers=["Authorization", "X-API-Key", "Content-Type"]))
    middleware += [Middleware(ApiKey, key=settings.api_key), Middleware(BodyLimit, max_bytes=settings.max_body_bytes)]
    app = Starlette(routes=ROUTES, middleware=middleware, lifespan=lifespan,
                    exception_handlers={DetzooError: _user_error, HTTPException: _http_error,
                                        ClientDisconnect: _client_gone, Exception: _bug})
    app.state.service = service
    return app
