"""Shared by the service tests: images to send, the Predictor's answer to compare with, a decompression
bomb, an in-process client (and a Gate that holds the model's calls), and a real ``detzoo serve`` process on a
free local port."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import httpx2
from PIL import Image
from starlette.testclient import TestClient

from detzoo.common.config import DatasetSpec
from detzoo.data.formats import read_dataset
from detzoo.data.loader import decode_rgb
from detzoo.models.selection import SelectOptions
from detzoo.serve import ServeSettings, create_app
from fast_training import TRAIN_IMAGES, start_cli, wait_for

# Box coordinates are rounded to 0.01 px in the answer (Detections.to_dict), scores to 1e-5. The service may
# run an image in a batch with others where the reference ran it alone; float32 convolutions of another
# batch size can take other kernels, whose sums differ by a few ulps: relative 1e-6 of the logits, i.e.
# well under 1e-3 px on a 640-px side and 1e-5 in score. Equal after rounding, give or take one last digit.
BOX_TOLERANCE = 0.01 + 1e-3
SCORE_TOLERANCE = 1e-5 + 1e-6


def trained_images(coco128: Path, count: int = TRAIN_IMAGES) -> list[Path]:
    """The coco128 images trained_checkpoint overfits (it detects things on them with high scores)."""
    return [Path(record.path) for record in read_dataset(DatasetSpec(str(coco128))).records[:count]]


def reference(predictor, path: Path, options: SelectOptions | None = None) -> list[dict]:
    """What the Predictor says about one image, in the answer's JSON form."""
    return predictor.predict_images([decode_rgb(path)], options)[0].to_dict()["detections"]


def assert_same_detections(answer: list[dict], expected: list[dict]) -> None:
    assert len(answer) == len(expected), (len(answer), len(expected))
    for got, want in zip(answer, expected):
        assert got["label"] == want["label"] and got["class_name"] == want["class_name"], (got, want)
        assert abs(got["score"] - want["score"]) <= SCORE_TOLERANCE, (got, want)
        assert max(abs(a - b) for a, b in zip(got["box"], want["box"])) <= BOX_TOLERANCE, (got, want)


def png_bomb(side: int = 20000) -> bytes:
    """A real PNG of side x side 1-bit black pixels: 50 MB of pixel rows, deflated to about 48 KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + side // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def encoded(image: Image.Image, kind: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """``detzoo serve MODEL --port P ARGS`` in its own process group, ready when /readyz says 200."""

    def __init__(self, model: Path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = start_cli(["serve", str(model), "--port", str(self.port), *args])
        wait_for(self.ready, self.process, "the server to be ready", timeout=300)

    def ready(self) -> bool:
        try:
            return httpx2.get(f"{self.url}/readyz", timeout=5).status_code == 200
        except httpx2.TransportError:
            time.sleep(0.2)
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


def client_for(predictor, **settings) -> TestClient:
    return TestClient(create_app(predictor, ServeSettings(**settings), "model.pt"))


def wait_ready(client: TestClient) -> None:
    deadline = time.monotonic() + 120
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the service never became ready"
        time.sleep(0.05)


class Gate:
    """Holds the model's calls while closed (to fill the queue or time a request out), passes them when open."""

    def __init__(self, predictor):
        self.opened = threading.Event()
        self.opened.set()
        self.calls = threading.Semaphore(0)
        original = predictor.predict_images

        def held(images, options=None):
            if not self.opened.is_set():
                self.calls.release()
            assert self.opened.wait(120), "the gate was never opened"
            return original(images, options)

        predictor.predict_images = held


