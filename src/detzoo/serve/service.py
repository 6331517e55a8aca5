"""What the routes share: the Predictor, the settings, the batch queue, the metrics and the service's state
(warming up, ready, draining), plus what ``GET /v1/models`` says about the model."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import anyio
import torch

from ..predict import Predictor
from ..visualize import PALETTE
from .batching import BatchQueue
from .metrics import Metrics
from .settings import ServeSettings
from .tracking import TrackSessions

log = logging.getLogger("detzoo.serve")


def selection_defaults(backend) -> dict | None:
    """The model's own score threshold, NMS IoU and detections cap, where the backend knows them."""
    holder = getattr(getattr(backend, "model", None), "selection", None) or getattr(backend, "postprocess", None)
    if holder is not None:
        return {"score_threshold": holder.score_thresh, "iou_threshold": holder.nms_thresh,
                "max_detections": holder.detections_per_img}
    baked = getattr(getattr(backend, "metadata", None), "extra", {}).get("postprocess")
    if baked is None:
        return None
    return {"score_threshold": baked["score_thresh"], "iou_threshold": baked["nms_thresh"],
            "max_detections": baked["detections_per_img"]}


def model_info(predictor: Predictor, source: str | Path) -> dict:
    """Name, classes, pre-processing, backend, device and precision of the served model."""
    backend = predictor.backend
    metadata = getattr(backend, "metadata", None)
    if metadata is not None:  # ONNX Runtime: the file describes itself
        name, kind, precision = metadata.model, "onnxruntime", metadata.precision
        device = backend.session.get_providers()[0]
    else:
        name, kind = getattr(backend.model, "zoo_name", "detector"), "pytorch"
        precision, device = getattr(backend, "precision", "fp32"), str(backend.device)
    return {"name": name, "source": Path(source).name, "class_names": list(predictor.class_names),
            "preprocess": predictor.preprocess.to_dict(), "backend": kind, "device": device,
            "precision": precision, "selection_defaults": selection_defaults(backend)}


class Service:
    def __init__(self, predictor: Predictor, settings: ServeSettings, source: str | Path):
        self.predictor = predictor
        self.settings = settings
        self.info = model_info(predictor, source)
        self.metrics = Metrics()
        self.queue: BatchQueue | None = None
        self.decode_limiter: anyio.CapacityLimiter | None = None
        self.ready = False
        self.draining = False
        self.track_sessions = TrackSessions(predictor.tracking)  # POST /v1/track: a tracker per client

    @property
    def name(self) -> str:
        return self.info["name"]

    def models_document(self) -> dict:
        """``GET /v1/models``: the model, the limits in force and the page's drawing palette."""
        batching = {"max_batch": self.settings.max_batch, "max_batch_delay_ms": self.settings.max_batch_delay_ms}
        return {"models": [self.info], "limits": self.settings.limits(), "batching": batching,
                "palette": list(PALETTE)}

    async def start(self) -> None:
        """Runs at startup: the queue's worker, then a warm-up in the model's thread (readiness after it)."""
        settings = self.settings
        self.decode_limiter = anyio.CapacityLimiter(settings.decode_threads)
        self.queue = BatchQueue(self.predictor.predict_images, settings.max_batch,
                                settings.max_batch_delay_ms / 1000, settings.queue_size, self.metrics.batch_stats())
        loop = asyncio.get_running_loop()
        warm_up = loop.run_in_executor(self.queue.executor, self.warm_up)  # queued before any batch
        self.queue.start()
        warm_up.add_done_callback(self._warmed)

    def warm_up(self) -> None:
        """One call at batch 1 and one at max_batch: the first call of a shape is slow (allocations, kernel
        choices), and the first requests should not pay for it."""
        started = time.perf_counter()
        height, width = self.predictor.preprocess.output_size(480, 640)
        image = torch.zeros(3, height, width, dtype=torch.uint8)
        for count in sorted({1, self.settings.max_batch}):
            self.predictor.predict_images([image] * count)
        log.info("model warmed up in %.1f s", time.perf_counter() - started)

    def _warmed(self, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            log.error("warm-up failed: %r; the service stays not ready", None if future.cancelled()
                      else future.exception())
            return
        self.ready = True

    async def stop(self) -> None:
        """Runs at shutdown, after the server has drained the requests in flight."""
        self.draining = True
        self.ready = False
        if self.queue is not None:
            await self.queue.stop()
