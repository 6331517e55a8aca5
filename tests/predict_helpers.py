"""Shared by the prediction tests: a tiny untrained checkpoint and small H.264 clips made from coco128 photos
with PyAV, the library detzoo reads and writes video with."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from detzoo.common.checkpoints import atomic_save, model_payload
from detzoo.common.config import load_config
from detzoo.models.weights import build_model

CLASSES = ["person", "car", "dog"]
# random weights: the focal-loss head starts every score near its prior 0.01, so this threshold keeps boxes
SCORE = "0.005"


def tiny_checkpoint(path: Path) -> Path:
    """ssd300_mobilenetv2 at 128 px with random (seeded) weights and 3 classes."""
    torch.manual_seed(0)
    config = load_config("ssd300_mobilenetv2", ["model.input_size=128"])
    model = build_model(config, len(CLASSES)).eval()
    atomic_save(model_payload(model, config.to_dict(), CLASSES), path)
    return path


def photos(coco128: Path, count: int, size: tuple[int, int] = (160, 120)) -> list[np.ndarray]:
    """The first ``count`` coco128 photos resized to ``size`` (width, height), uint8 RGB [H,W,3]."""
    paths = sorted((coco128 / "val2017").glob("*.jpg"))[:count]
    return [np.asarray(Image.open(p).convert("RGB").resize(size)) for p in paths]


def write_clip(path: Path, images: list[np.ndarray], hold: int = 3, fps: int = 10, faststart: bool = True) -> int:
    """An H.264 MP4 showing each image for ``hold`` frames; returns the frame count."""
    height, width = images[0].shape[:2]
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for image in images:
            for _ in range(hold):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return len(images) * hold


def decode_all(path: Path) -> tuple[list[np.ndarray], list[float], dict]:
    """Every frame of a video (RGB), its time in seconds, and the stream's codec, profile, size and pixel format."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        info = {"codec": context.name, "width": context.width, "height": context.height,
                "pix_fmt": context.pix_fmt, "fps": stream.average_rate}
        frames = [(frame.to_ndarray(format="rgb24"), float(frame.time)) for frame in container.decode(stream)]
    return [f for f, _ in frames], [t for _, t in frames], info
