"""The connection cap's arithmetic and eviction order (``serve.connections``), the deadlines of
``serve.protocol`` against a small app served by uvicorn in this process (real sockets on 127.0.0.1: the body
deadline replaces a longer header deadline, a client that stops reading a large answer is cut off, one that
reads slowly gets all of it), and a client gone in the middle of its body counted as 499, not a 500. The real
server process: test_serve_hostile.py."""

from __future__ import annotations

import asyncio
import functools
import socket
import threading
import time

import pytest
import uvicorn
from serve_helpers import client_for

from detzoo.common.errors import ConfigError
from detzoo.serve.connections import (
    EVICT_SILENCE_S,
    RESERVED_FDS,
    ConnectionGuard,
    ConnectionLimits,
    connection_limits,
    files_needed,
)
from detzoo.serve.errors import RequestError
from detzoo.serve.metrics import Metrics
from detzoo.serve.protocol import GuardedH11Protocol
from detzoo.serve.settings import ServeSettings


def test_the_default_cap_keeps_every_connection_within_the_open_file_limit():
    limits = connection_limits(None, file_limit=1024, files_open=9)
    assert limits.backlog == 1024 // 16
    used = files_needed(limits.max_connections, limits.overflow, limits.backlog, files_open=9)
    assert used == 9 + RESERVED_FDS + limits.backlog + limits.sockets + limits.max_connections
    # the most connections that fit, and no more
    assert used <= 1024 < files_needed(limits.max_connections + 1, limits.overflow, limits.backlog, files_open=9)
    assert (limits.max_connections, limits.overflow, limits.sockets) == (395, 32, 395 + 32 + 64)
    assert connection_limits(None, file_limit=65536, files_open=9).backlog == 2048  # uvicorn's default
    assert connection_limits(4, file_limit=1024, files_open=9).overflow == 4
    for too_many, file_limit in ((1000, 1024), (None, 64)):
        with pytest.raises(ConfigError, match=r"open-file limit of at least \d+ \(this process has \d+; 9 files "
                                              r"open\): raise it \(ulimit -n\) or lower --max-connections$"):
            connection_limits(too_many, file_limit=file_limit, files_open=9)


class FakeConnection:
    def __init__(self, guard: ConnectionGuard, last_progress: float, waiting: bool):
        self.guard, self.last_progress, self.waiting, self.stopped = guard, last_progress, waiting, None

    def waiting_on_client(self) -> bool:
        return self.waiting

    def stop_waiting(self, reason: str) -> None:
        self.stopped = reason
        self.guard.release(self)


def test_a_full_server_evicts_the_stalest_silent_client_and_never_a_busy_one():
    metrics = Metrics()
    limits = ConnectionLimits(max_connections=3, overflow=1, backlog=1, open_file_limit=1024)
    guard = ConnectionGuard(limits, metrics)
    busy = FakeConnection(guard, 0.0, waiting=False)  # its request is with the app
    stale = FakeConnection(guard, 1.0, waiting=True)
    recent = FakeConnection(guard, 9.5, waiting=True)
    assert [guard.admit(c, now) for c, now in ((busy, 0.0), (stale, 1.0), (recent, 9.5))] == ["served"] * 3
    assert guard.admit(FakeConnection(guard, 10.0, waiting=True), 10.0) == "served"
    assert (busy.stopped, stale.stopped, recent.stopped) == (None, "evicted", None)
    # now recent has been silent for less than EVICT_SILENCE_S, and busy is busy: the next goes to the overflow
    assert 10.1 - recent.last_progress < EVICT_SILENCE_S
    assert guard.admit(FakeConnection(guard, 10.1, waiting=True), 10.1) == "overflow"
    # limits.sockets open, the evicted one included until it is closed: one more is refused
    refused = FakeConnection(guard, 10.1, waiting=True)
    assert guard.total == limits.sockets and guard.admit(refused, 10.1) is None
    for gone in (refused, stale):  # their sockets closed (the protocol's connection_lost)
        guard.closed(gone)
    assert guard.admit(FakeConnection(guard, 10.6, waiting=True), 10.6) == "served"  # recent is 1.1 s silent
    assert (busy.stopped, recent.stopped) == (None, "evicted")
    assert metrics.connections_evicted._value.get() == 2
    assert metrics.connections_refused.labels("accept")._value.get() == 1


# --------------------------------------------------------------------------- deadlines, in this process

ANSWER_BYTES = 64 * 2**20


async def small_app(scope, receive, send):
    """GET: an answer far larger than the socket buffers (1 MB chunks). POST: reads the body, then says how
    long it was, or the status of the RequestError its receive() raised (as the service's handlers do)."""
    if scope["method"] == "POST":
        length, status = 0, 200
        try:
            while True:
                message = await receive()
                length += len(message.get("body", b""))
                if not message.get("more_body"):
                    break
        except RequestError as error:
            status = error.status
        body = str(length).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"connection", b"close"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(ANSWER_BYTES).encode())]})
    chunk = b"x" * 2**20
    for index in range(ANSWER_BYTES // len(chunk)):
        await send({"type": "http.response.body", "body": chunk, "more_body": index < ANSWER_BYTES // len(chunk) - 1})


@pytest.fixture
def small_server():
    """``small_app`` behind the guarded protocol, in a thread of this process: headers within 60 s, bodies and
    answers with pauses of at most 1 s."""
    settings = ServeSettings(header_timeout_s=60.0, body_timeout_s=1.0, max_connections=8)
    metrics = Metrics()
    guard = ConnectionGuard(connection_limits(settings.max_connections), metrics)
    config = uvicorn.Config(small_app, lifespan="off", log_level="warning", ws="none", loop="asyncio",
                            http=functools.partial(GuardedH11Protocol, guard=guard, settings=settings))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    yield listener.getsockname()[1], guard, metrics
    server.should_exit = True
    thread.join(timeout=60)
    listener.close()


def test_the_body_deadline_applies_from_the_end_of_the_headers(small_server):
    """The connection's timer was set for the 60-s header deadline; the 1-s body deadline must move it
    earlier. 10 s: far above 1 s plus a loaded machine's delays, far below 60 s."""
    port, _, metrics = small_server
    with socket.create_connection(("127.0.0.1", port), timeout=120) as connection:
        connection.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        sent = time.monotonic()
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        waited = time.monotonic() - sent
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert answer.endswith(b'\r\n\r\n{"error": "no part of the request body arrived for 1 s"}'), answer
    assert waited < 10.0, waited
    assert metrics.request_timeouts.labels("body")._value.get() == 1


def _request(port: int, receive_buffer: int | None = None) -> socket.socket:
    connection = socket.socket()
    if receive_buffer:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    connection.connect(("127.0.0.1", port))
    connection.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return connection


def test_a_client_that_stops_reading_its_answer_is_cut_off(small_server):
    port, guard, metrics = small_server
    connection = _request(port, receive_buffer=4096)  # and never read: the server's writes stall
    deadline = time.monotonic() + 60  # the server's deadline is 1 s; a loaded machine may take longer to act
    while metrics.request_timeouts.labels("send")._value.get() == 0 or guard.total:
        assert time.monotonic() < deadline, "the connection was never closed"
        time.sleep(0.05)
    assert metrics.request_timeouts.labels("send")._value.get() == 1
    received = 0
    connection.settimeout(10)
    try:
        while chunk := connection.recv(2**20):
            received += len(chunk)
    except ConnectionResetError:
        pass
    connection.close()
    assert received < ANSWER_BYTES


def test_a_client_reading_slowly_gets_all_of_its_answer(small_server):
    """4 MB every 0.1 s: 1.6 s for 64 MB, longer than the 1-s deadline, with progress all along."""
    port, guard, metrics = small_server
    connection = _request(port)
    connection.settimeout(30)
    received, head = 0, b""
    while b"\r\n\r\n" not in head:
        head += connection.recv(1)
    while received < ANSWER_BYTES:
        chunk = connection.recv(4 * 2**20)
        if not chunk:
            break
        received += len(chunk)
        time.sleep(0.1)
    connection.close()
    assert head.startswith(b"HTTP/1.1 200 ") and received == ANSWER_BYTES
    assert metrics.request_timeouts.labels("send")._value.get() == 0


# --------------------------------------------------------------------------- a client gone mid-body


def test_a_client_gone_in_the_middle_of_its_body_is_a_499_not_a_bug(predictor):
    """uvicorn tells the app with ``http.disconnect``; Starlette raises ClientDisconnect. Before: a 500 in
    /metrics and a traceback in the log for every client that hung up."""
    messages = iter([{"type": "http.request", "body": b"\xff\xd8" * 100, "more_body": True},
                     {"type": "http.disconnect"}])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/detect", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"image/jpeg"), (b"content-length", b"100000")]}
    with client_for(predictor) as client:
        asyncio.run(client.app(scope, receive, send))
        assert sent[0]["status"] == 499
        metrics = client.get("/metrics").text
    assert 'detzoo_requests_total{method="POST",route="/v1/detect",status="499"} 1.0' in metrics
