"""``detzoo serve``: an HTTP detection service in front of a Predictor, with a web page.

- ``app.create_app(predictor, settings)``: the ASGI app (Starlette); ``server.serve(...)`` runs it with uvicorn.
- Layout: ``routes`` (HTTP), ``inputs`` / ``options`` / ``images`` (request bodies, options, checked decoding),
  ``batching`` (the bounded queue and the batch worker), ``metrics`` (Prometheus), ``middleware`` (body limit,
  API key), ``service`` (shared state), ``page`` + ``index.html`` (the web page), ``settings``.
Needs the ``serve`` extra (``pip install detzoo[serve]``): starlette, uvicorn, python-multipart,
prometheus-client.
"""

from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str):
    """``create_app`` is imported on first use, so that ``detzoo.serve.settings`` (the CLI's defaults) works
    without the serve extra installed."""
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
