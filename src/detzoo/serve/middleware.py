"""ASGI middleware that refuses before any route code runs: ``BodyLimit`` (413 for a declared Content-Length
over the limit, before a byte of the body is read; and a body that grows past the limit while it streams in
is cut off there) and ``ApiKey`` (401 without the key, where one is set; the health probes and the page stay
open). Both answer in the service's one-line JSON error form."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import RequestError

OPEN_PATHS = ("/", "/assets/DejaVuSans.ttf", "/healthz", "/readyz", "/v2/health/live", "/v2/health/ready")


async def send_error(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(RequestError):
    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than the limit of {limit} bytes")


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await send_error(send, 400, "Content-Length is not a number")
                return
            if int(declared) > self.max_bytes:
                await send_error(send, 413, str(BodyTooLarge(self.max_bytes)))
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # a chunked body has no Content-Length to check up front
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)


class ApiKey:
    """``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (compared in constant time)."""

    def __init__(self, app: ASGIApp, key: str | None):
        self.app = app
        self.key = key.encode() if key else None

    def authorised(self, scope: Scope) -> bool:
        headers = dict(scope["headers"])
        given = headers.get(b"x-api-key") or b""
        authorization = headers.get(b"authorization", b"")
        if authorization[:7].lower() == b"bearer ":
            given = authorization[7:].strip()
        return hmac.compare_digest(given, self.key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.key is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS
                or scope["method"] == "OPTIONS" or self.authorised(scope)):
            await self.app(scope, receive, send)
            return
        await send_error(send, 401, "missing or wrong API key: send 'Authorization: Bearer KEY' or "
                                    "'X-API-Key: KEY'", {"WWW-Authenticate": "Bearer"})
