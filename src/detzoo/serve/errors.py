"""The service's answer to a bad request: a ``RequestError`` carries the HTTP status and a one-line reason.
Every other user-facing error is a ``DetzooError`` from the layers below (a bad option value, an image that
does not decode); ``status_for`` maps those to a 4xx, so no user mistake ever becomes a 500."""

from __future__ import annotations

from ..common.errors import ConfigError, DataError, DetzooError


class RequestError(DetzooError):
    """A request the service refuses; ``status`` is its HTTP code, ``headers`` extra response headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def status_for(error: DetzooError) -> int:
    """HTTP status of a user-facing error: a RequestError says its own; a bad option value (ConfigError) is
    422; an image that does not decode (DataError) is 400; any other DetzooError is 400."""
    if isinstance(error, RequestError):
        return error.status
    if isinstance(error, ConfigError):
        return 422
    if isinstance(error, DataError):
        return 400
    return 400
