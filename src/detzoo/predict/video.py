"""Prediction on a video source as a generator: one ``FrameResult`` (frame index, timestamp, Detections, the
decoded frame) at a time, so memory stays flat on hours of video.

    predictor = Predictor.from_file("best.pt")
    for result in predictor.predict_video("street.mp4", vid_stride=2):
        print(result.index, result.timestamp, len(result.detections))

Frames of a file are predicted in batches of the Predictor's ``batch_size`` (throughput); a live source's
freshest frame alone (latency). Decoding runs in a background thread (``frames.FrameReader``); the model runs in
the caller's thread, through ``Predictor.predict_images``, so a frame's detections are exactly what the image
Predictor gives for the same decoded pixels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..common.errors import ConfigError, DataError
from ..common.structures import Detections
from ..models.selection import SelectOptions
from ..visualize import draw
from .frames import Frame, FrameReader, frame_range
from .outputs import frame_record
from .sources import VideoSource, resolve_source


@dataclass(frozen=True)
class FrameResult:
    index: int  # the frame's position in the source
    timestamp: float  # seconds (a file: presentation time; live: since the run started)
    detections: Detections  # image_id = index, path = the source
    image: np.ndarray  # the decoded frame, uint8 RGB [H,W,3]

    def record(self) -> dict:
        """The frame's JSON Lines record."""
        return frame_record(self.detections, self.index, self.timestamp)

    def drawn(self) -> np.ndarray:
        """The frame with its detections drawn (the annotated video's frame)."""
        return draw(self.image, self.detections)


class VideoPrediction:
    """Iterate for ``FrameResult``s; ``info`` (width, height, fps, frame count), ``expected_frames``,
    ``stats`` (decoded, dropped, reconnects, decode_s) and ``infer_s`` tell how the run goes. Opening the source
    happens here, so a source that cannot be opened is an error before the first frame."""

    def __init__(self, predictor, source: str | VideoSource, options: SelectOptions | None = None, *,
                 vid_stride: int = 1, frames: str | tuple[int, int | None] | None = None,
                 batch_size: int | None = None, live: bool | None = None,
                 notify: Callable[[str], None] | None = None):
        if isinstance(source, str):
            resolved = resolve_source(source, live=live)
            if not isinstance(resolved, VideoSource):
                raise ConfigError(f"{source}: images, not a video source; use Predictor.predict_paths")
            source = resolved
        start, end = frame_range(frames) if frames is None or isinstance(frames, str) else frames
        self.predictor, self.source, self.options = predictor, source, options
        self.batch_size = 1 if source.live else (batch_size or predictor.batch_size)
        self.reader = FrameReader(source, vid_stride, start, end, notify=notify)
        self.info = self.reader.info
        self.expected_frames = self.reader.expected_frames
        self.stats = self.reader.stats
        self.infer_s = 0.0

    def __iter__(self) -> Iterator[FrameResult]:
        batch: list[Frame] = []
        try:
            try:
                for frame in self.reader:
                    batch.append(frame)
                    if len(batch) == self.batch_size:
                        yield from self._predict(batch)
                        batch = []
            except DataError:  # the frames read before a decoding error are still predicted
                yield from self._predict(batch)
                raise
            yield from self._predict(batch)
        finally:
            self.close()

    def _predict(self, batch: list[Frame]) -> Iterator[FrameResult]:
        if not batch:
            return
        clock = time.perf_counter()
        images = [torch.from_numpy(frame.rgb).permute(2, 0, 1) for frame in batch]
        detections = self.predictor.predict_images(images, self.options)
        self.infer_s += time.perf_counter() - clock
        for frame, det in zip(batch, detections):
            det.image_id, det.path = frame.index, self.source.url
            yield FrameResult(frame.index, frame.timestamp, det, frame.rgb)

    def stage_seconds(self) -> dict[str, float]:
        """Time spent so far per stage: decoding (in its thread) and inference."""
        return {"decode": self.stats.decode_s, "infer": self.infer_s}

    def summary_text(self) -> str:
        """What the run's summary line adds (tracking: tracks and counts)."""
        return ""

    def finish(self, out: Path) -> list[Path]:
        """Write the run's summary files into ``out`` (tracking: ``<name>.tracks.json``); the paths."""
        return []

    def close(self) -> None:
        self.reader.close()
