"""`detzoo serve` as a real server process on 127.0.0.1: 16 concurrent clients get the Predictor's answers, an
overloaded server answers only 200 or 503 and lives on, a body declared too large is refused before it is
sent, and SIGTERM drains the requests in flight and exits 0."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
from serve_helpers import ServerProcess, assert_same_detections, reference, trained_images

from detzoo.models.selection import SelectOptions
from detzoo.predict import Predictor

CLIENTS = 16
REQUESTS_PER_CLIENT = 3
TIMEOUT = httpx2.Timeout(300.0)  # a loaded 2-core machine; never an assertion on time


@pytest.fixture(scope="module")
def server(trained_checkpoint):
    server = ServerProcess(trained_checkpoint, "--max-batch", "4", "--max-batch-delay-ms", "10")
    yield server
    server.stop()


def _send(client: httpx2.Client, url: str, path, form: str, score: float | None = None) -> httpx2.Response:
    data = path.read_bytes()
    options = {} if score is None else {"score_threshold": score}
    if form == "multipart":
        return client.post(f"{url}/v1/detect", files={"image": (path.name, data, "image/jpeg")},
                           data={k: str(v) for k, v in options.items()})
    if form == "raw":
        return client.post(f"{url}/v1/detect", content=data, headers={"Content-Type": "image/jpeg"}, params=options)
    return client.post(f"{url}/v1/detect", json={"image": base64.b64encode(data).decode(), **options})


def test_16_concurrent_clients_get_the_predictors_answers(server, trained_checkpoint, coco128):
    """Half the clients ask for score >= 0.3, half for >= 0.25 (so batches mix options); both thresholds are
    far from every score and leave far fewer detections than the cap of 100 (both checked), so float32 rounding
    cannot move a detection across a boundary."""
    images = trained_images(coco128, 8)
    predictor = Predictor.from_file(trained_checkpoint, device="cpu")
    scores = (0.3, 0.25)
    expected = {(path, score): reference(predictor, path, SelectOptions(score_threshold=score))
                for path in images for score in scores}
    assert all(0 < len(detections) < 100 for detections in expected.values())
    near = [d["score"] for path in images for d in reference(predictor, path, SelectOptions(score_threshold=0.2))
            if any(abs(d["score"] - score) < 1e-4 for score in scores)]
    assert not near, near  # no score close enough to a threshold to cross it by rounding
    forms = ("multipart", "raw", "json")

    def client_run(index: int) -> list[tuple[object, httpx2.Response]]:
        answers = []
        with httpx2.Client(timeout=TIMEOUT) as client:
            for request in range(REQUESTS_PER_CLIENT):
                path, score = images[(index + request) % len(images)], scores[index % 2]
                answers.append(((path, score), _send(client, server.url, path, forms[(index + request) % 3], score)))
        return answers

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = [answer for run in pool.map(client_run, range(CLIENTS)) for answer in run]
    assert len(answers) == CLIENTS * REQUESTS_PER_CLIENT
    failed = [(key[0].name, response.status_code, response.text) for key, response in answers
              if response.status_code != 200]
    assert not failed, failed
    for key, response in answers:
        # batched with other clients' images where the reference ran alone: equal within float32 rounding
        assert_same_detections(response.json()["images"][0]["detections"], expected[key])
    metrics = httpx2.get(f"{server.url}/metrics", timeout=TIMEOUT).text
    count = CLIENTS * REQUESTS_PER_CLIENT
    assert f'detzoo_requests_total{{method="POST",route="/v1/detect",status="200"}} {count}.0' in metrics
    assert f"detzoo_images_total {count}.0" in metrics


def test_a_body_declared_too_large_is_refused_before_it_is_sent(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as connection:
        connection.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                           b"Content-Length: 1000000000\r\n\r\n")  # and not one byte of the gigabyte
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"request body larger than the limit of 20971520 bytes" in answer
    assert httpx2.get(f"{server.url}/healthz", timeout=TIMEOUT).status_code == 200


@pytest.fixture(scope="module")
def small_queue_server(trained_checkpoint):
    """A queue of 2 and a long batch delay: the first two requests wait in the forming batch for 3 s, anything
    more finds the queue full. Used by the overload test, then stopped by the SIGTERM test (the last one)."""
    server = ServerProcess(trained_checkpoint, "--queue-size", "2", "--max-batch", "8", "--max-batch-delay-ms",
                           "3000")
    yield server
    server.stop()


def test_an_overloaded_server_answers_only_200_and_503_and_lives_on(small_queue_server, coco128):
    server = small_queue_server
    image = trained_images(coco128, 1)[0]
    start = threading.Barrier(24)  # 24 clients start together

    def one_request(_):
        with httpx2.Client(timeout=TIMEOUT) as client:
            start.wait(timeout=120)
            return _send(client, server.url, image, "raw")

    with ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(one_request, range(24)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 503}, statuses
    for refused in (r for r in responses if r.status_code == 503):
        assert refused.headers["Retry-After"] == "1" and "server busy" in refused.json()["error"]
    assert httpx2.get(f"{server.url}/readyz", timeout=TIMEOUT).status_code == 200
    with httpx2.Client(timeout=TIMEOUT) as client:
        assert _send(client, server.url, image, "json").status_code == 200


def test_sigterm_drains_the_requests_in_flight_and_exits_0(small_queue_server, coco128):
    server = small_queue_server
    image = trained_images(coco128, 1)[0]

    def one_request(_):
        with httpx2.Client(timeout=TIMEOUT) as client:
            return _send(client, server.url, image, "multipart")

    with ThreadPoolExecutor(2) as pool:
        in_flight = [pool.submit(one_request, i) for i in range(2)]
        deadline = time.monotonic() + 120
        while not re.search(r"^detzoo_queue_depth 2\.0$", httpx2.get(f"{server.url}/metrics").text, re.M):
            assert time.monotonic() < deadline, "the two requests never reached the queue"
            time.sleep(0.05)
        os.kill(server.process.pid, signal.SIGTERM)  # while both wait for the 3-s batch
        assert [future.result().status_code for future in in_flight] == [200, 200]
    assert server.process.wait(timeout=120) == 0
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"{server.url}/healthz", timeout=10)
