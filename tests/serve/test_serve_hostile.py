"""`detzoo serve` against hostile clients, as a real server process with real sockets on 127.0.0.1 (issue 19):
stalled bodies and headers get 408 (or, for a connection that never sent a byte, a close) within the deadline
while a slow but moving upload is served; malformed HTTP gets 400/414/431 with a reason, the answer is read
rather than a reset, and the server goes on; more stalled uploads than the connection cap leave a normal
request answered within 2 s; a server whose every connection is busy answers 503 + Retry-After while the
accepted requests are served and /healthz answers. /metrics counts all of it."""

from __future__ import annotations

import json
import re
import socket
import time

import httpx2
import pytest
from serve_helpers import ServerProcess, trained_images

DEADLINE = 2.0  # --header-timeout and --body-timeout of the deadline server
# Upper bound on the time a deadline takes to act: the deadline plus the scheduling delays of a loaded 2-core
# CI machine. A server without the deadline would run into READ_TIMEOUT instead, far above it.
LATE = DEADLINE + 8.0
READ_TIMEOUT = 60.0
STALLED_HEAD = (b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                b"Content-Length: 100000\r\n\r\n")


class Exchange:
    """One raw HTTP exchange: send ``pieces`` with ``pause`` seconds between them (stopping if the server has
    closed), then read until the server closes. ``answer`` holds what came back; ``ending`` says how it ended
    ('eof', 'reset' or 'timeout'); times are time.monotonic() values."""

    def __init__(self, port: int, pieces: list[bytes], pause: float = 0.0):
        with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT) as connection:
            self.connected = self.first_sent = self.last_sent = time.monotonic()
            for index, piece in enumerate(pieces):
                if index:
                    time.sleep(pause)
                try:
                    connection.sendall(piece)
                except OSError:  # the server answered and closed before the client was done
                    break
                self.last_sent = time.monotonic()
                if index == 0:
                    self.first_sent = self.last_sent
            self.answer, self.ending = b"", "eof"
            try:
                while chunk := connection.recv(65536):
                    self.answer += chunk
            except ConnectionResetError:
                self.ending = "reset"
            except TimeoutError:
                self.ending = "timeout"
            self.closed = time.monotonic()

    @property
    def status(self) -> int:
        return int(self.answer.split(b" ", 2)[1]) if self.answer else 0

    @property
    def headers(self) -> bytes:
        return self.answer.partition(b"\r\n\r\n")[0].lower()

    @property
    def error(self) -> str:
        return json.loads(self.answer.partition(b"\r\n\r\n")[2])["error"]


def metric(server: ServerProcess, line: str) -> float:
    """The value of one /metrics line (``name{labels}``), 0 when absent."""
    text = httpx2.get(f"{server.url}/metrics", timeout=READ_TIMEOUT).text
    found = re.search(rf"^{re.escape(line)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="module")
def deadline_server(trained_checkpoint):
    server = ServerProcess(trained_checkpoint, "--header-timeout", str(DEADLINE), "--body-timeout", str(DEADLINE))
    yield server
    server.stop()


# --------------------------------------------------------------------------- deadlines


def test_a_stalled_upload_gets_408_within_the_deadline(deadline_server):
    server = deadline_server
    timeouts = 'detzoo_request_timeouts_total{phase="body"}'
    answered = 'detzoo_requests_total{method="POST",route="/v1/detect",status="408"}'
    before = metric(server, timeouts), metric(server, answered)
    stalled = Exchange(server.port, [STALLED_HEAD + b"x" * 1000])  # 1 000 of the 100 000 bytes, then nothing
    assert stalled.status == 408 and stalled.ending == "eof", stalled.answer
    assert stalled.error == "no part of the request body arrived for 2 s"
    assert b"connection: close" in stalled.headers
    # the server's clock starts when it reads the last byte, after the client's
    assert DEADLINE - 0.05 <= stalled.closed - stalled.last_sent <= LATE
    assert (metric(server, timeouts), metric(server, answered)) == (before[0] + 1, before[1] + 1)
    assert httpx2.get(f"{server.url}/healthz", timeout=READ_TIMEOUT).status_code == 200


def test_a_slow_but_moving_upload_is_served(deadline_server, coco128):
    """A JPEG in 6 pieces 0.5 s apart: 2.5 s in all, longer than the 2-s deadline, never 2 s without progress
    (1.5 s of margin for the client's own scheduling)."""
    image = trained_images(coco128, 1)[0].read_bytes()
    head = (b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(image))
    step = -(-len(image) // 5)
    pieces = [head] + [image[i:i + step] for i in range(0, len(image), step)]
    assert len(pieces) == 6
    upload = Exchange(deadline_server.port, pieces, pause=0.5)
    assert upload.last_sent - upload.first_sent > DEADLINE
    assert upload.status == 200, upload.answer
    assert "detections" in json.loads(upload.answer.partition(b"\r\n\r\n")[2])["images"][0]


def test_slow_headers_get_408_and_a_silent_connection_is_closed(deadline_server):
    server = deadline_server
    before = metric(server, 'detzoo_request_timeouts_total{phase="headers"}')
    partial = Exchange(server.port, [b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\n"])
    # slowloris: one header line every 0.5 s, for up to 10 s
    trickled = Exchange(server.port, [b"GET /healthz HTTP/1.1\r\n"] + [b"X-%d: a\r\n" % i for i in range(20)],
                        pause=0.5)
    silent = Exchange(server.port, [])
    for exchange in (partial, trickled):
        assert exchange.status == 408, exchange.answer
        assert exchange.error == "the request's headers did not arrive within 2 s"
        assert DEADLINE - 0.05 <= exchange.closed - exchange.first_sent <= LATE
    assert trickled.last_sent - trickled.first_sent < LATE  # cut off while still trickling
    assert silent.answer == b"" and silent.ending == "eof"  # nothing was asked: nothing to answer
    assert DEADLINE - 0.05 <= silent.closed - silent.connected <= LATE
    assert metric(server, 'detzoo_request_timeouts_total{phase="headers"}') == before + 3


# --------------------------------------------------------------------------- malformed HTTP

BODY = b"x" * 100_000  # sent right after the head: the client is still writing when the answer comes
MALFORMED = [  # (request, status, reason)
    (b"POST /v1/detect HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\n" + BODY, 400, "bad Content-Length"),
    (b"POST /v1/detect HTTP/1.1\r\nHost: h\r\nContent-Length: 12ab\r\n\r\n" + BODY, 400, "bad Content-Length"),
    (b"POST /v1/detect HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + BODY, 400,
     "both Content-Length and Transfer-Encoding (RFC 9112 section 6.3)"),
    (b"GET /healthz HTTP/1.1\r\nHost: h\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n", 431,
     "request head of 20030 bytes, more than 16384"),
    (b"GET /healthz HTTP/1.1\r\nHost: h\r\nX-Long: " + b"a" * 20_000, 431,  # and never the end of the line
     "request head longer than 16384 bytes"),
    (b"GET /healthz HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(5000)) + b"\r\n", 431,
     "5001 header fields, more than 100"),
    (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414, "request target longer than 16384 bytes"),
]


def test_malformed_requests_get_4xx_with_a_reason_and_the_server_goes_on(deadline_server):
    server = deadline_server
    labels = ("400", "414", "431")
    before = {s: metric(server, f'detzoo_malformed_requests_total{{status="{s}"}}') for s in labels}
    for request, status, reason in MALFORMED:
        answer = Exchange(server.port, [request])
        assert answer.status == status, (request[:60], answer.answer[:300])
        assert answer.error == f"malformed HTTP request: {reason}", request[:60]
        # the answer, then EOF: not a reset, although the client was still sending (the server lingers)
        assert answer.ending == "eof" and b"connection: close" in answer.headers
        assert answer.closed - answer.last_sent <= LATE
    after = {s: metric(server, f'detzoo_malformed_requests_total{{status="{s}"}}') for s in labels}
    assert {s: after[s] - before[s] for s in labels} == {"400": 3, "414": 1, "431": 3}
    assert httpx2.get(f"{server.url}/healthz", timeout=READ_TIMEOUT).status_code == 200


# --------------------------------------------------------------------------- the connection cap


def _answer_or_open(connection: socket.socket) -> bytes | str:
    """What the server said on a stalled connection ('open' if it has said nothing within 0.5 s)."""
    connection.settimeout(0.5)
    answer = b""
    try:
        while chunk := connection.recv(65536):
            answer += chunk
    except TimeoutError:
        return answer or "open"
    except ConnectionResetError:  # refused before its request was read: the 503 came first
        pass
    return answer


def test_more_stalled_uploads_than_the_cap_leave_a_normal_request_answered_within_2_s(trained_checkpoint,
                                                                                         coco128):
    """12 stalled uploads against a cap of 4 (and 4 overflow places): 4 are served, 8 get 503 with Retry-After
    (4 after their headers, 4 at once). Once they have been silent for over a second, each new client makes
    room by closing the stalest with 408. The deadlines are 60 s, so an answer that waited for one would take
    at least 60 s; 2 s is the issue's bound, about 20 times what these requests take on a loaded CI machine."""
    server = ServerProcess(trained_checkpoint, "--max-connections", "4", "--header-timeout", "60",
                           "--body-timeout", "60")
    try:
        stalled = [socket.create_connection(("127.0.0.1", server.port), timeout=READ_TIMEOUT) for _ in range(12)]
        for connection in stalled:
            connection.sendall(STALLED_HEAD + b"x" * 1000)
        time.sleep(1.5)  # > connections.EVICT_SILENCE_S
        image = trained_images(coco128, 1)[0].read_bytes()
        for method, path, body in (("GET", "/v1/models", None), ("POST", "/v1/detect", image),
                                   ("GET", "/healthz", None)):
            started = time.monotonic()
            response = httpx2.request(method, f"{server.url}{path}", content=body, timeout=READ_TIMEOUT,
                                      headers={"Content-Type": "image/jpeg"} if body else None)
            latency = time.monotonic() - started
            assert response.status_code == 200 and latency < 2.0, (path, response.status_code, latency)
        outcomes = [_answer_or_open(connection) for connection in stalled]
        for connection in stalled:
            connection.close()
        answers = [outcome for outcome in outcomes if outcome != "open"]
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503 ")]
        evicted = [a for a in answers if a.startswith(b"HTTP/1.1 408 ")]
        assert len(refused) + len(evicted) == len(answers), answers
        assert len(refused) == 8 and all(b"\r\nretry-after: 1\r\n" in a.lower() for a in refused), refused
        assert b"server busy: all 4 connections in use" in refused[0]
        assert len(evicted) >= 1 and b"at its connection limit" in evicted[0]
        assert metric(server, "detzoo_connections_evicted_total") == len(evicted)
        assert (metric(server, 'detzoo_connections_refused_total{how="overflow"}')
                + metric(server, 'detzoo_connections_refused_total{how="accept"}')) == 8
    finally:
        server.stop()


def test_a_server_whose_connections_are_all_busy_answers_503_and_its_probes(trained_checkpoint, coco128):
    """4 detection requests wait 5 s for a batch to fill (busy: nobody to evict); a fifth client gets 503 +
    Retry-After at once for anything but the health probes, and the 4 are answered 200."""
    server = ServerProcess(trained_checkpoint, "--max-connections", "4", "--max-batch-delay-ms", "5000")
    try:
        image = trained_images(coco128, 1)[0].read_bytes()
        request = (b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                   b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(image)) + image
        busy = [socket.create_connection(("127.0.0.1", server.port), timeout=READ_TIMEOUT) for _ in range(4)]
        for connection in busy:
            connection.sendall(request)
        refused = httpx2.get(f"{server.url}/v1/models", timeout=READ_TIMEOUT)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1", refused.text
        assert refused.json()["error"] == "server busy: all 4 connections in use; retry later"
        for probe in ("/healthz", "/readyz", "/v2/health/live"):
            assert httpx2.get(f"{server.url}{probe}", timeout=READ_TIMEOUT).status_code == 200, probe
        for connection in busy:
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
            connection.close()
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
        assert metric(server, 'detzoo_connections_refused_total{how="overflow"}') == 1
        assert metric(server, "detzoo_connections_evicted_total") == 0
    finally:
        server.stop()
