"""``detzoo predict MODEL VIDEO``: the generator of ``video.py`` consumed into an annotated H.264 MP4 and
per-frame JSON Lines, with a progress bar (frames/s and ETA for a file; a live frames/s line with the drop
count for a stream), an optional window (``--show``, where a display exists) and a final summary.

Drawing and encoding run in a background thread behind a short queue, so the next batch is predicted
meanwhile. Ctrl-C or SIGTERM stops after the current batch: the video is finished (playable) and the JSON Lines
hold every frame it shows; so does an error in the middle of a file, which is then reported.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..common.errors import ConfigError, DataError
from ..engine.signals import StopRequest
from .outputs import JsonLinesWriter
from .video import FrameResult, VideoPrediction
from .video_io import VideoInfo, VideoWriter

ENCODE_QUEUE = 8  # frames waiting to be drawn and encoded


class AnnotatedVideo:
    """Draws each frame's detections and encodes it, in a background thread."""

    def __init__(self, path: Path, info: VideoInfo):
        self.writer = VideoWriter(path, info.width, info.height, info.fps)
        self.draw_s = self.encode_s = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=ENCODE_QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="detzoo-encode", daemon=True)
        self._thread.start()

    def put(self, result: FrameResult, drawn: np.ndarray | None = None) -> None:
        """Queue a frame (``drawn``: already drawn, e.g. for the window)."""
        if self._error is not None:
            raise self._error
        self._queue.put((result, drawn))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep draining, so put() never blocks after a failure
            result, drawn = item
            try:
                clock = time.perf_counter()
                if drawn is None:
                    drawn = result.drawn()
                middle = time.perf_counter()
                self.writer.write(drawn, result.timestamp)
                self.draw_s += middle - clock
                self.encode_s += time.perf_counter() - middle
            except BaseException as exc:  # raised in the main thread by put() / close()
                self._error = exc

    def close(self) -> Path | None:
        """Finish the file (None, and no file, when no frame was written)."""
        self._queue.put(None)
        self._thread.join()
        if self.writer.frames == 0:
            self.writer.abort()
            return None
        path = self.writer.close()
        if self._error is not None:
            raise self._error
        return path


class Window:
    """``--show``: the annotated frames in an OpenCV window, where there is a display and OpenCV has GUI
    support; refused with one line elsewhere. ``show()`` is False once the user pressed q or Esc."""

    def __init__(self, title: str):
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise ConfigError("--show needs a display (neither DISPLAY nor WAYLAND_DISPLAY is set); the annotated "
                              "video is written to --out instead")
        try:
            import cv2

            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except Exception as exc:  # ImportError, or cv2.error from a headless build
            raise ConfigError(f"--show needs OpenCV with GUI support (pip install opencv-python): {exc}") from None
        self.cv2, self.title = cv2, title

    def show(self, rgb: np.ndarray) -> bool:
        self.cv2.imshow(self.title, rgb[:, :, ::-1])
        return self.cv2.waitKey(1) & 0xFF not in (ord("q"), 27)

    def close(self) -> None:
        self.cv2.destroyWindow(self.title)


@dataclass
class VideoSummary:
    name: str
    frames: int
    detections: int
    seconds: float
    decoded: int
    dropped: int
    reconnects: int
    per_frame_ms: dict[str, float]
    outputs: list[Path]
    signum: int | None = None  # the signal that stopped the run
    extra: str = ""  # tracking: tracks and counts

    def line(self) -> str:
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        stages = ", ".join(f"{stage} {ms:.1f} ms" for stage, ms in self.per_frame_ms.items())
        extra = f"; {self.dropped} dropped" + (f", {self.reconnects} reconnect(s)" if self.reconnects else "")
        stopped = f" (stopped by {signal.Signals(self.signum).name})" if self.signum else ""
        written = ", ".join(str(p) for p in self.outputs) or "nothing written"
        tracked = f"{self.extra}; " if self.extra else ""
        return (f"{self.name}: {self.frames} frame(s) of {self.decoded} decoded in {self.seconds:.1f} s "
                f"({fps:.1f} frames/s){stopped}, {self.detections} detection(s); {tracked}per frame: {stages}"
                f"{extra} -> {written}")


def run_video(prediction: VideoPrediction, out: Path, draw_video: bool = True, show: bool = False) -> VideoSummary:
    """Consume ``prediction`` into ``out/<name>.mp4`` (unless ``draw_video`` is off) and ``out/<name>.jsonl``."""
    source = prediction.source
    video_path, lines_path = out / f"{source.name}.mp4", out / f"{source.name}.jsonl"
    if source.is_file and Path(source.url).resolve() in (video_path.resolve(), lines_path.resolve()):
        raise ConfigError(f"--out {out}: the output would replace the source {source.url}; choose another folder")
    window = Window(source.name) if show else None
    video = AnnotatedVideo(video_path, prediction.info) if draw_video else None
    lines = JsonLinesWriter(lines_path)
    bar = tqdm(total=prediction.expected_frames, unit="frame", desc=source.name, disable=None, dynamic_ncols=True)
    frames = detections = 0
    started = time.perf_counter()
    outputs: list[Path] = []
    action = "finishing the current frames, then closing the video and JSON Lines"
    failure: DataError | None = None
    with StopRequest(action=action) as stop:
        try:
            for result in prediction:
                drawn = result.drawn() if window is not None else None
                if video is not None:
                    video.put(result, drawn)
                lines.write(result.record())
                frames, detections = frames + 1, detections + len(result.detections)
                bar.update(1)
                if source.live:
                    bar.set_postfix(dropped=prediction.stats.dropped, refresh=False)
                if stop.signum is not None or (window is not None and not window.show(drawn)):
                    break
        except DataError as exc:  # e.g. a file that ends early: what was read is still written
            failure = exc
        finally:
            prediction.close()
            bar.close()
            if window is not None:
                window.close()
            if video is not None and (path := video.close()) is not None:
                outputs.append(path)
            outputs.append(lines.close())
            outputs += prediction.finish(out)
    if failure is not None:
        raise DataError(f"{failure}; the {frames} frame(s) before it are in {', '.join(map(str, outputs))}")
    seconds = time.perf_counter() - started
    stats = prediction.stats
    per_frame = prediction.stage_seconds()
    if video is not None:
        per_frame.update(draw=video.draw_s, encode=video.encode_s)
    per_frame_ms = {stage: total / max(frames, 1) * 1000 for stage, total in per_frame.items()}
    return VideoSummary(source.name, frames, detections, seconds, stats.decoded, stats.dropped, stats.reconnects,
                        per_frame_ms, outputs, stop.signum, prediction.summary_text())
