"""uvicorn's h11 protocol with deadlines, the connection cap and stricter HTTP parsing (issue 19).

A subclass of uvicorn's ``H11Protocol`` because no setting does this: uvicorn arms no timer before a first
answer has been sent (a connection that never finishes its headers, or stops sending its body, is kept for
ever), and h11 bounds only the *incomplete* head (a 20 KB header line that arrives in one read passes, as do
thousands of header fields, and Content-Length together with chunked). Parsing, the ASGI cycle, keep-alive
(uvicorn's ``timeout_keep_alive``), flow control and graceful shutdown stay uvicorn's. Added here:

- **Deadlines that count progress.** The request line and headers must arrive within ``header_timeout_s`` of
  the request's first byte (of the accept, for a connection's first request). A body may pause at most
  ``body_timeout_s`` between two arrivals, so a slow but moving upload is never cut; so may a client reading
  its answer. A late request gets 408 (the service's one-line JSON error) and is closed at once, freeing its
  socket; for a late body, the app's next ``receive()`` raises ``RequestTimeout`` too, so /metrics counts the
  408 by route. A client that stops reading its answer is cut off (no answer is possible).
- **Stricter parsing** (``StrictConnection``): more than ``max_headers`` fields or ``max_header_bytes`` of head
  is 431 (414 for the request target alone); Content-Length with Transfer-Encoding is 400 (a request-smuggling
  shape, RFC 9112 section 6.3); h11's own refusals (negative or non-numeric Content-Length, bad chunking, an
  unknown transfer coding) are 400 with h11's reason, never a 5xx. The answer is half-closed and what the client
  still sends is read and dropped for up to ``LINGER_S`` (nginx's lingering close), so a client still writing
  its body reads the answer instead of a reset.
- **Admission** through ``connections.ConnectionGuard``: served; overflow (the health probes answered as usual,
  anything else 503 + ``Retry-After``); or closed at once. When the server is full, the served connection whose
  client has been silent longest is closed to make room (``stop_waiting('evicted')``).
"""

from __future__ import annotations

import http
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .connections import ConnectionGuard
from .errors import RequestError
from .middleware import send_error
from .settings import ServeSettings

LINGER_S = 2.0  # a closing connection reads and drops what its client still sends for at most this long
MESSAGE_CHARS = 300  # h11's reasons quote the offending bytes: enough to see them, not an echo of 16 KB
PROBE_PATHS = ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready")


class RequestTimeout(RequestError):
    def __init__(self, message: str):
        super().__init__(408, message, {"Connection": "close"})


class StrictConnection(h11.Connection):
    """h11's server side that also refuses heads over the limits and Content-Length with chunked, and keeps the
    reason of its last refusal (uvicorn's handler only gets a fixed message)."""

    def __init__(self, max_header_bytes: int, max_headers: int):
        super().__init__(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.refusal: h11.RemoteProtocolError | None = None

    def next_event(self):
        reading_head = self.their_state is h11.IDLE
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431 and reading_head:  # h11's "Receive buffer too long"
                exc = h11.RemoteProtocolError(f"request head longer than {self.max_header_bytes} bytes", 431)
            self.refusal = exc
            raise exc from None
        if isinstance(event, h11.Request):
            try:
                self._check(event)
            except h11.RemoteProtocolError as exc:
                self.refusal = exc
                raise
        return event

    def _check(self, request: h11.Request) -> None:
        if len(request.target) > self.max_header_bytes:
            raise h11.RemoteProtocolError(f"request target longer than {self.max_header_bytes} bytes", 414)
        if len(request.headers) > self.max_headers:
            raise h11.RemoteProtocolError(f"{len(request.headers)} header fields, more than {self.max_headers}", 431)
        size = len(request.method) + len(request.target) + sum(len(k) + len(v) + 4 for k, v in request.headers)
        if size > self.max_header_bytes:
            raise h11.RemoteProtocolError(f"request head of {size} bytes, more than {self.max_header_bytes}", 431)
        names = {name for name, _ in request.headers}
        if b"content-length" in names and b"transfer-encoding" in names:
            raise h11.RemoteProtocolError("both Content-Length and Transfer-Encoding (RFC 9112 section 6.3)")


class GuardedH11Protocol(H11Protocol):
    """One client connection. ``Config(http=functools.partial(GuardedH11Protocol, guard=..., settings=...))``."""

    def __init__(self, config, server_state, app_state, _loop=None, *, guard: ConnectionGuard,
                 settings: ServeSettings):
        super().__init__(config, server_state, app_state, _loop)
        self.guard = guard
        self.settings = settings
        self.conn = StrictConnection(settings.max_header_bytes, settings.max_headers)
        self.guarded_app = self.app
        self.app = self.app_with_deadline
        self.pool: str | None = None
        self.closing = False
        self.timeout_message: str | None = None  # set when the body is late: the app's next receive raises
        self.last_progress = self.head_since = self.loop.time()
        self.write_stalled_since: float | None = None
        self.timer = self.final_close = None

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        now = self.loop.time()
        self.last_progress = self.head_since = now
        self.pool = self.guard.admit(self, now)
        if self.pool is None:  # past the overflow too: 503 before the request is read, and closed at once
            self.refuse(503, self.busy_message(), {"Retry-After": "1"}, linger=False)
            return
        if self.pool == "overflow":
            self.app = self.busy_app
        self.arm(self.settings.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # lingering: what a refused or timed-out client still sends is dropped
        now = self.loop.time()
        self.last_progress = now
        self.guard.progressed(self)
        if self.head_since is None and self.conn.their_state is h11.IDLE:
            self.head_since = now  # the first byte of the next request on this connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self.head_since = None
        self.rearm()  # the headers may be complete: the body's deadline can be earlier than the headers'

    def pause_writing(self) -> None:
        self.write_stalled_since = self.loop.time()
        super().pause_writing()
        self.rearm()

    def resume_writing(self) -> None:
        self.write_stalled_since = None
        self.progressed()
        super().resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in (self.timer, self.final_close):
            if handle is not None:
                handle.cancel()
        self.guard.closed(self)
        super().connection_lost(exc)

    # ------------------------------------------------------------------ uvicorn's hooks

    def on_response_complete(self) -> None:
        self.progressed()  # an idle keep-alive connection is silent from here
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this for every request h11 (or StrictConnection) refuses."""
        refusal = self.conn.refusal
        status = refusal.error_status_hint if refusal is not None and refusal.error_status_hint < 500 else 400
        self.guard.count_malformed(status)
        self.refuse(status, f"malformed HTTP request: {refusal if refusal is not None else msg}")

    def shutdown(self) -> None:
        if not self.closing:
            super().shutdown()

    # ------------------------------------------------------------------ ASGI apps of this connection

    async def app_with_deadline(self, scope, receive, send) -> None:
        async def receive_in_time():
            message = await receive()
            if self.timeout_message is not None:  # it says http.disconnect: the protocol answered 408 and closed
                raise RequestTimeout(self.timeout_message)
            return message

        await self.guarded_app(scope, receive_in_time, send)

    async def busy_app(self, scope, receive, send) -> None:
        """The app of an overflow connection: the health probes as usual, anything else 503."""
        if scope["type"] == "http" and scope["path"] in PROBE_PATHS:
            await self.app_with_deadline(scope, receive, send)
            return
        self.guard.count_refused("overflow")
        await send_error(send, 503, self.busy_message(), {"Retry-After": "1", "Connection": "close"})

    def busy_message(self) -> str:
        return f"server busy: all {self.guard.limits.max_connections} connections in use; retry later"

    # ------------------------------------------------------------------ deadlines

    def progressed(self) -> None:
        self.last_progress = self.loop.time()
        self.guard.progressed(self)

    def waiting_on_client(self) -> bool:
        """True while only the client can move this connection on (not while the app computes)."""
        return not self.closing and self.deadline()[1] is not None

    def deadline(self) -> tuple[str, float | None]:
        """(phase, when the client's time in it runs out; None while the app, not the client, has the turn)."""
        settings = self.settings
        if self.write_stalled_since is not None:
            return "send", self.write_stalled_since + settings.body_timeout_s
        their_state = self.conn.their_state
        if their_state is h11.IDLE:  # idle keep-alive connections are uvicorn's (timeout_keep_alive); backstop
            since = self.head_since if self.head_since is not None else self.last_progress + settings.keep_alive_s
            return "headers", since + settings.header_timeout_s
        if their_state is h11.SEND_BODY and not self.flow.read_paused:  # paused: the app is behind, not the client
            return "body", self.last_progress + settings.body_timeout_s
        return "app", None

    def arm(self, delay: float) -> None:
        self.timer = self.loop.call_later(max(delay, 0.0), self.check_deadline)

    def rearm(self) -> None:
        """Make the timer fire no later than the current deadline (progress only moves a deadline later, and
        ``check_deadline`` then waits for the rest; a new phase can move it earlier)."""
        _, deadline = self.deadline()
        if self.closing or deadline is None or (self.timer is not None and self.timer.when() <= deadline):
            return
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(deadline, self.check_deadline)

    def check_deadline(self) -> None:
        self.timer = None
        if self.closing:
            return
        phase, deadline = self.deadline()
        now = self.loop.time()
        if deadline is None or now < deadline:  # progress since the timer was set: wait for the rest
            self.arm(deadline - now if deadline is not None else self.settings.body_timeout_s)
            return
        self.guard.count_timeout(phase)
        self.stop_waiting(phase)

    def stop_waiting(self, reason: str) -> None:
        """Close a connection whose client is too slow (``reason``: its phase) or silent while the server is
        full ('evicted'): 408 where HTTP still allows an answer."""
        phase, _ = self.deadline()
        silent = self.loop.time() - self.last_progress
        why = (f"the server is at its connection limit and this client was silent for {silent:.1f} s"
               if reason == "evicted" else None)
        if phase == "headers" and self.conn.trailing_data[0]:
            self.refuse(408, why or f"the request's headers did not arrive within {self.settings.header_timeout_s:g} s",
                        linger=False)
        elif phase == "body" and self.cycle is not None and not self.cycle.response_started:
            # Answered here and closed at once, so that the socket is free now, not once the app has run; the
            # app's receive() raises RequestTimeout all the same, so /metrics counts the route's 408 (the app's
            # own answer is dropped: the connection is gone).
            self.timeout_message = why or f"no part of the request body arrived for {self.settings.body_timeout_s:g} s"
            self.refuse(408, self.timeout_message, linger=False)
        elif phase == "send":
            self.begin_closing()
            self.transport.abort()  # the answer cannot be delivered: do not wait for the buffer to drain
        else:
            self.close_now()

    # ------------------------------------------------------------------ closing

    def begin_closing(self) -> None:
        """Leave the pools; the socket is closed for sure within LINGER_S."""
        self.closing = True
        self.guard.release(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.final_close is None:
            self.final_close = self.loop.call_later(LINGER_S, self.transport.abort)

    def close_now(self) -> None:
        self.begin_closing()
        self.transport.close()

    def refuse(self, status: int, message: str, headers: dict[str, str] | None = None, linger: bool = True) -> None:
        """Answer in the service's JSON error form and close. ``linger``: half-close, so that the client reads
        the answer and EOF while what it still sends is dropped (until it closes, or LINGER_S)."""
        body = json.dumps({"error": message[:MESSAGE_CHARS]}).encode()
        fields = {"content-type": "application/json", "content-length": str(len(body)), "connection": "close",
                  **(headers or {})}
        head = f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in fields.items())
        self.transport.write(head.encode() + b"\r\n" + body)
        if self.cycle is not None and not self.cycle.response_complete:  # refused in the middle of a body
            self.cycle.disconnected = True  # the app's receive() says so, and what it sends is dropped
            self.cycle.message_event.set()
        self.begin_closing()
        if linger and self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()
