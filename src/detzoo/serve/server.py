"""Running the service: find the model (``runs/demo`` when none is named), load it, warn about an open
address without a key, size the connection cap from the open-file limit (``connections``), and run uvicorn
with the guarded h11 protocol (``protocol``: deadlines, the cap, strict parsing). SIGTERM (or Ctrl-C) drains:
uvicorn stops accepting, the requests in flight are answered (``/readyz`` says 503 meanwhile), the batch worker
stops, and the process exits 0."""

from __future__ import annotations

import dataclasses
import functools
import logging
import signal
import sys
from pathlib import Path

import uvicorn

from ..common.errors import ConfigError
from ..predict import Predictor
from .app import create_app
from .connections import ConnectionGuard, connection_limits
from .protocol import GuardedH11Protocol
from .settings import LOOPBACK_HOSTS, ServeSettings

log = logging.getLogger("detzoo.serve")
DEMO_RUN = Path("runs/demo/run")


def default_model() -> Path:
    """The demo's model (``make demo``), relative to the working directory."""
    for candidate in (DEMO_RUN / "best.pt", DEMO_RUN / "last.pt"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no MODEL given and no demo model in {DEMO_RUN}/: run `make demo` (or `detzoo demo`) "
                      "first, or pass a checkpoint, a run folder or an .onnx file")


class DrainingServer(uvicorn.Server):
    """uvicorn's server that marks the service as draining the moment a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, service):
        super().__init__(config)
        self.service = service

    def handle_exit(self, sig, frame) -> None:
        self.service.draining = True
        super().handle_exit(sig, frame)


def open_address_warning(host: str, settings: ServeSettings) -> str | None:
    if host in LOOPBACK_HOSTS or settings.api_key is not None:
        return None
    return (f"warning: serving on {host}, reachable from other machines, without an API key: anyone who can "
            "reach it can use it (set --api-key or $DETZOO_API_KEY)")


def uvicorn_config(app, host: str, port: int, settings: ServeSettings, limits, access_log: bool = False
                   ) -> uvicorn.Config:
    """uvicorn with the guarded h11 protocol, whatever else is installed (httptools would be picked by
    ``http='auto'``), the asyncio loop (its accept loop is what ``connections`` budgets for), no WebSocket
    upgrade (the service has no WebSocket route, and an upgraded connection would leave the guard's count)."""
    guard = ConnectionGuard(limits, app.state.service.metrics)
    protocol = functools.partial(GuardedH11Protocol, guard=guard, settings=settings)
    return uvicorn.Config(app, host=host, port=port, access_log=access_log, log_level="info",
                          timeout_graceful_shutdown=settings.timeout_s + 5, lifespan="on", http=protocol,
                          ws="none", loop="asyncio", backlog=limits.backlog, timeout_keep_alive=settings.keep_alive_s)


def serve(model: str | Path | None, host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
          settings: ServeSettings | None = None, access_log: bool = False, precision: str | None = None,
          compile: bool = False) -> int:
    settings = settings or ServeSettings()
    model = Path(model) if model else default_model()
    predictor = Predictor.from_file(model, device=device, precision=precision, compile=compile,
                                    batch_size=settings.max_batch)
    warning = open_address_warning(host, settings)
    if warning:
        print(warning, file=sys.stderr)
    limits = connection_limits(settings.max_connections)  # after the model is loaded: its files are counted
    settings = dataclasses.replace(settings, max_connections=limits.max_connections)
    app = create_app(predictor, settings, model)
    config = uvicorn_config(app, host, port, settings, limits, access_log)
    server = DrainingServer(config, app.state.service)
    print(f"serving {model} on http://{host}:{port}/ (web page), POST /v1/detect; Ctrl-C or SIGTERM drains "
          "and stops", file=sys.stderr)
    print(f"limits: {limits.max_connections} connections (open-file limit {limits.open_file_limit}), headers "
          f"within {settings.header_timeout_s:g} s, body and answer pauses up to {settings.body_timeout_s:g} s, "
          f"keep-alive {settings.keep_alive_s:g} s", file=sys.stderr)
    # uvicorn re-raises the stop signal after its graceful shutdown, with the handlers found at start: these make
    # that re-raise end in a clean exit 0 (and a signal before uvicorn listens just stops it).
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda sig, frame: server.handle_exit(sig, frame))
    server.run()
    if not server.started:
        raise ConfigError(f"the server did not start on {host}:{port} (see the log above; port in use?)")
    return 0
