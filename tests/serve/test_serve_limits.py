"""The service's refusals in-process (Starlette's TestClient): every malformed or abusive request gets a 4xx
with a one-line reason (body, image, bomb, pixel and count limits, options, API key, CORS), a full queue 503 and
a late request 504; a bug is a 500 and the server goes on."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image
from serve_helpers import client_for, encoded, png_bomb, wait_ready
from starlette.testclient import TestClient

from detzoo.predict import Predictor
from detzoo.serve import ServeSettings, create_app
from detzoo.serve.middleware import BodyLimit

# --------------------------------------------------------------------------- bad input and abuse


def test_bad_images_and_bodies_get_a_4xx_with_one_line(client, images, tmp_path):
    jpeg = images[0].read_bytes()
    tiny = Image.new("RGB", (8, 8))
    cases = [
        (dict(content=b"plain text", headers={"Content-Type": "image/jpeg"}), 415, "not an image in a supported format"),
        (dict(content=encoded(tiny, "GIF"), headers={"Content-Type": "image/gif"}), 415, "supported format"),
        (dict(content=encoded(tiny, "TIFF"), headers={"Content-Type": "image/tiff"}), 415, "supported format"),
        (dict(content=jpeg[: len(jpeg) // 2], headers={"Content-Type": "image/jpeg"}), 400, "truncated"),
        (dict(content=b"", headers={"Content-Type": "image/png"}), 400, "empty image"),
        (dict(content=b"x", headers={"Content-Type": "text/plain"}), 415, "unsupported Content-Type"),
        (dict(content=b"x"), 415, "unsupported Content-Type '(none)'"),
        (dict(content=b"{oops", headers={"Content-Type": "application/json"}), 400, "not valid JSON"),
        (dict(json=[1, 2]), 400, "must be an object"),
        (dict(json={"image": "!!!not base64"}), 400, "image 0: not valid base64"),
        (dict(json={"image": 17}), 400, "must be a base64 string"),
        (dict(json={"images": []}), 400, "no image in the request"),
        (dict(json={"image": "a", "images": ["b"]}), 400, "either 'image' or 'images'"),
        (dict(data={"score_threshold": "0.3"}, files={"note": ("a.txt", b"hello", "text/plain")}), 415,
         "a.txt: not an image"),
        (dict(content=b"--x\r\nbroken", headers={"Content-Type": "multipart/form-data; boundary=x"}), 400,
         "no image in the request"),
        (dict(content=b"x", headers={"Content-Type": "multipart/form-data"}), 400, "bad multipart body"),
    ]
    for request, status, message in cases:
        response = client.post("/v1/detect", **request)
        assert response.status_code == status, (request, response.text)
        error = response.json()["error"]
        assert message in error and "\n" not in error, (request, error)
    assert client.get("/healthz").status_code == 200  # still alive


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's notice at 89 MP
def test_a_decompression_bomb_is_refused_from_its_header(client):
    bomb = png_bomb()
    assert len(bomb) < 64 * 1024  # 20000 x 20000 pixels in about 48 KB
    for request in (dict(content=bomb, headers={"Content-Type": "image/png"}),
                    dict(files={"image": ("bomb.png", bomb, "image/png")}),
                    dict(json={"image": base64.b64encode(bomb).decode()})):
        response = client.post("/v1/detect", **request)
        assert response.status_code == 413, response.text
        # Pillow itself refuses 400 MP at open (over 2 x its MAX_IMAGE_PIXELS), our limit is lower still
        assert "than the limit of 40000000, refused from its header" in response.json()["error"]
    medium = png_bomb(10000)  # 100 MP: under Pillow's own refusal, over ours
    response = client.post("/v1/detect", content=medium, headers={"Content-Type": "image/png"})
    assert response.status_code == 413
    assert "10000 x 10000 = 100000000 pixels, more than the limit of 40000000" in response.json()["error"]


def test_the_pixel_limit_is_the_operators(predictor):
    with client_for(predictor, max_pixels=100 * 100) as client:
        small = encoded(Image.new("RGB", (100, 100)), "PNG")
        large = encoded(Image.new("RGB", (101, 100)), "PNG")
        assert client.post("/v1/detect", content=small, headers={"Content-Type": "image/png"}).status_code == 200
        response = client.post("/v1/detect", content=large, headers={"Content-Type": "image/png"})
        assert response.status_code == 413 and "limit of 10000" in response.json()["error"]


def test_too_many_images_is_a_413_in_every_form(predictor, images):
    with client_for(predictor, max_images=2) as client:
        data = images[0].read_bytes()
        files = [("images", (f"{i}.jpg", data, "image/jpeg")) for i in range(3)]
        encoded_images = [base64.b64encode(data).decode()] * 3
        for response in (client.post("/v1/detect", files=files),
                         client.post("/v1/detect", json={"images": encoded_images})):
            assert response.status_code == 413 and "at most 2 per request" in response.json()["error"]
        assert client.post("/v1/detect", files=files[:2]).status_code == 200


def test_a_body_over_the_limit_is_a_413_in_every_form(predictor, images):
    data = images[0].read_bytes()
    with client_for(predictor, max_body_bytes=len(data) - 1) as client:
        for request in (dict(content=data, headers={"Content-Type": "image/jpeg"}),
                        dict(files={"image": ("a.jpg", data, "image/jpeg")}),
                        dict(json={"image": base64.b64encode(data).decode()})):
            response = client.post("/v1/detect", **request)
            assert response.status_code == 413 and "larger than the limit" in response.json()["error"]
        chunked = client.post("/v1/detect", content=iter([data[:1000], data[1000:]]),
                              headers={"Content-Type": "image/jpeg"})  # no Content-Length: counted as it arrives
        assert "content-length" not in chunked.request.headers
        assert chunked.status_code == 413 and "larger than the limit" in chunked.json()["error"]
        metrics = client.get("/metrics").text
        assert 'detzoo_requests_total{method="POST",route="/v1/detect",status="413"} 4.0' in metrics


def _run_asgi(app, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[int, int]:
    """(status, how many body chunks the app pulled) for a raw ASGI request."""
    pulled = 0
    sent = []

    async def receive():
        nonlocal pulled
        pulled += 1
        body = chunks[pulled - 1] if pulled <= len(chunks) else b""
        return {"type": "http.request", "body": body, "more_body": pulled < len(chunks)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/detect", "headers": headers, "query_string": b""}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], pulled


def test_the_body_limit_answers_before_reading_the_body():
    """A declared Content-Length over the limit: 413 before one chunk is read. A chunked body (no length):
    cut off as soon as it passes the limit, the rest is never pulled."""

    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def handled(scope, receive, send):  # what the app's exception handler does with BodyTooLarge
        from detzoo.serve.middleware import BodyTooLarge, send_error
        try:
            await app(scope, receive, send)
        except BodyTooLarge as exc:
            await send_error(send, exc.status, str(exc))

    limited = BodyLimit(handled, max_bytes=1000)
    assert _run_asgi(limited, [(b"content-length", b"1000000000")], [b"x" * 100] * 10) == (413, 0)
    assert _run_asgi(limited, [], [b"x" * 400] * 100) == (413, 3)
    assert _run_asgi(limited, [(b"content-length", b"800")], [b"x" * 400] * 2) == (200, 2)
    assert _run_asgi(limited, [(b"content-length", b"-5")], [b""])[0] == 400


def test_an_api_key_guards_everything_but_the_probes_and_the_page(predictor, images):
    with client_for(predictor, api_key="s3cret") as client:
        wait_ready(client)
        for path in ("/", "/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
            assert client.get(path).status_code == 200, path
        for path in ("/v1/models", "/metrics", "/v2/models/ssd300_mobilenetv2"):
            assert client.get(path).status_code == 401, path
        data = images[0].read_bytes()
        post = {"content": data}
        refused = client.post("/v1/detect", headers={"Content-Type": "image/jpeg"}, **post)
        assert refused.status_code == 401 and "API key" in refused.json()["error"]
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        wrong = client.post("/v1/detect", headers={"Content-Type": "image/jpeg", "X-API-Key": "guess"}, **post)
        assert wrong.status_code == 401
        for header in ({"Authorization": "Bearer s3cret"}, {"X-API-Key": "s3cret"}):
            response = client.post("/v1/detect", headers={"Content-Type": "image/jpeg", **header}, **post)
            assert response.status_code == 200, response.text
        assert client.get("/v1/models", headers={"X-API-Key": "s3cret"}).json()["limits"]["api_key_required"]


def test_cors_is_off_by_default_and_on_for_the_given_origins(predictor):
    origin = {"Origin": "https://app.example"}
    with client_for(predictor) as client:
        assert "access-control-allow-origin" not in client.get("/v1/models", headers=origin).headers
    with client_for(predictor, cors_origins=["https://app.example"]) as client:
        assert client.get("/v1/models", headers=origin).headers["access-control-allow-origin"] == "https://app.example"
        other = client.get("/v1/models", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        preflight = client.options("/v1/detect", headers={**origin, "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 200


def test_a_bug_is_a_500_and_the_server_goes_on(trained_checkpoint, images):
    predictor = Predictor.from_file(trained_checkpoint, device="cpu")
    original, broken = predictor.predict_images, threading.Event()

    def sometimes_broken(batch, options=None):
        if broken.is_set():
            raise RuntimeError("simulated bug")
        return original(batch, options)

    predictor.predict_images = sometimes_broken
    app = create_app(predictor, ServeSettings(), "model.pt")
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        broken.set()
        post = dict(content=images[0].read_bytes(), headers={"Content-Type": "image/jpeg"})
        response = client.post("/v1/detect", **post)
        assert response.status_code == 500 and response.json()["error"].startswith("internal error (RuntimeError)")
        broken.clear()
        assert client.post("/v1/detect", **post).status_code == 200


# --------------------------------------------------------------------------- queue: 503 and 504


def test_a_full_queue_answers_503_at_once_and_a_late_request_504(gated, images):
    predictor, gate = gated
    post = dict(content=images[0].read_bytes(), headers={"Content-Type": "image/jpeg"})
    with client_for(predictor, queue_size=1, max_batch=1, timeout_s=60) as client, ThreadPoolExecutor(2) as pool:
        wait_ready(client)
        gate.opened.clear()
        running = pool.submit(client.post, "/v1/detect", **post)  # in the model, held there
        assert gate.calls.acquire(timeout=60)
        waiting = pool.submit(client.post, "/v1/detect", **post)  # the one place in the queue
        deadline = time.monotonic() + 60
        while "detzoo_queue_depth 1.0" not in client.get("/metrics").text:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        refused = client.post("/v1/detect", **post)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert "server busy" in refused.json()["error"]
        gate.opened.set()
        assert running.result().status_code == 200 and waiting.result().status_code == 200
    with client_for(predictor, timeout_s=0.5) as client:
        wait_ready(client)
        gate.opened.clear()
        late = client.post("/v1/detect", **post)
        assert late.status_code == 504 and "request timeout of 0.5 s" in late.json()["error"]
        gate.opened.set()
        assert client.post("/v1/detect", **post).status_code == 200

