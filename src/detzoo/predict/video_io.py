"""Reading and writing video with PyAV: FFmpeg's demuxers, decoders and libx264 come inside its wheel, so video
files, cameras and network streams are opened, and browser-playable H.264 MP4 written, with one pip install
(docs/design.md says why PyAV and not OpenCV or torchcodec: a measurement, ``benchmarks/bench_video_io.py``).

Written files are H.264 in MP4, yuv420p (what browsers decode), ``+faststart`` (the index first, so a page
plays while it loads), at the source's frame rate and size (an odd width or height loses its last pixel
column or row: 4:2:0 needs even sides). They are written under a temporary name and renamed when closed, so
an output file is always a complete, playable video.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..common.errors import ConfigError, DataError
from ..common.files import temp_path
from .sources import VideoSource

ENCODER = "libx264"
# ultrafast: the encoder's share of a video run stays small next to the model's (benchmarks/bench_video.py);
# crf 23 is x264's default quality
ENCODER_OPTIONS = {"preset": "ultrafast", "crf": "23"}
NETWORK_TIMEOUT_S = 10.0
DEFAULT_FPS = Fraction(25)  # when a stream does not say


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: Fraction
    frames: int | None  # as the container says (None: unknown, e.g. a stream)


@dataclass(frozen=True)
class DecodedFrame:
    index: int  # position in the stream, counting every decoded frame
    timestamp: float  # seconds: the frame's presentation time
    frame: object  # av.VideoFrame; ``rgb(frame)`` turns it into pixels

    def rgb(self) -> np.ndarray:
        return self.frame.to_ndarray(format="rgb24")


def video_libraries():
    """PyAV (and OpenCV for the encoder's colour conversion): the ``video`` extra; one line when missing."""
    try:
        import av
        import cv2
    except ImportError as exc:
        raise ConfigError(f"video needs the 'video' extra: pip install 'detzoo[video]' ({exc})") from None
    return av, cv2


def codec_threads() -> int:
    """Threads for FFmpeg's decoder and for x264: the cores the model leaves (torch's and ONNX Runtime's thread
    count is ``torch.get_num_threads()``), at least one. Both share the machine with the model, which is the
    bottleneck; more codec threads than free cores only make the model's threads wait at their barriers."""
    import torch

    return max(1, (os.cpu_count() or 1) - torch.get_num_threads())


def describe(source: VideoSource) -> str:
    return source.url if source.name in source.url else f"{source.name} ({source.url})"


class VideoInput:
    """An open video source: ``info`` and ``frames()``. Errors are DataError lines naming the source."""

    def __init__(self, source: VideoSource):
        av, _ = video_libraries()
        self.source = source
        options = {"rtsp_transport": "tcp"} if source.url.lower().startswith(("rtsp://", "rtsps://")) else {}
        timeout = None if source.is_file else NETWORK_TIMEOUT_S
        try:
            self.container = av.open(source.url, format=source.input_format, options=options, timeout=timeout)
        except (av.FFmpegError, OSError) as exc:
            raise DataError(f"{describe(source)}: cannot open as a video ({error_text(exc)})") from None
        if not self.container.streams.video:
            self.container.close()
            raise DataError(f"{describe(source)}: has no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"  # FFmpeg's frame + slice threads
        self.stream.codec_context.thread_count = codec_threads()
        context = self.stream.codec_context
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        self.info = VideoInfo(context.width, context.height, Fraction(rate) if rate else DEFAULT_FPS,
                              self.stream.frames or None)
        if not self.info.width or not self.info.height:
            self.close()
            raise DataError(f"{describe(source)}: the video stream has no frame size (not a video?)")

    def frames(self) -> Iterator[DecodedFrame]:
        """Every frame, in order. A decoding error is a DataError naming the source and the frame."""
        import av

        index = 0
        try:
            for frame in self.container.decode(self.stream):
                timestamp = frame.time if frame.time is not None else index / self.info.fps
                yield DecodedFrame(index, float(timestamp), frame)
                index += 1
        except (av.FFmpegError, OSError) as exc:
            raise DataError(f"{describe(self.source)}: cannot decode frame {index} (corrupt or truncated?): "
                            f"{error_text(exc)}") from None
        # FFmpeg's threaded decoder ends quietly where the data stops; the header says how many frames there are
        if self.source.is_file and self.info.frames and index < self.info.frames:
            raise DataError(f"{describe(self.source)}: the file ends after frame {index - 1} but its header "
                            f"announces {self.info.frames} frames (truncated or corrupt?)")

    def close(self) -> None:
        self.container.close()


def error_text(exc: BaseException) -> str:
    """FFmpeg's message without the errno and the repeated file name."""
    return getattr(exc, "strerror", None) or str(exc)


class VideoWriter:
    """H.264 MP4 at ``fps`` and (even) ``width`` x ``height``; ``write(rgb, timestamp)`` frame by frame, in time
    order; ``close()`` finishes the file and moves it into place."""

    def __init__(self, path: str | Path, width: int, height: int, fps: Fraction):
        av, self._cv2 = video_libraries()
        self._av = av
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.temp = temp_path(self.path)
        self.width, self.height = width - width % 2, height - height % 2
        if self.width < 2 or self.height < 2:
            raise DataError(f"{self.path}: cannot encode a {width}x{height} video")
        self.container = av.open(str(self.temp), "w", format="mp4", options={"movflags": "+faststart"})
        self.stream = self.container.add_stream(ENCODER, rate=fps, options=dict(ENCODER_OPTIONS))
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        self.stream.codec_context.thread_count = codec_threads()
        self.time_base = Fraction(1, 1) / fps  # one tick per source frame
        self.stream.codec_context.time_base = self.time_base
        self.frames = 0
        self._first: float | None = None
        self._last_pts = -1

    def write(self, rgb: np.ndarray, timestamp: float) -> None:
        """``rgb``: uint8 [H,W,3]; ``timestamp``: the frame's time in seconds (the output keeps the source's
        timing, so a run with --vid-stride plays as long as the source)."""
        av, cv2 = self._av, self._cv2
        if self._first is None:
            self._first = timestamp
        pts = max(round((timestamp - self._first) / self.time_base), self._last_pts + 1)
        # OpenCV's RGB -> I420 (BT.601, video range, as FFmpeg's) is 3x faster than FFmpeg's swscale here
        yuv = cv2.cvtColor(np.ascontiguousarray(rgb[: self.height, : self.width]), cv2.COLOR_RGB2YUV_I420)
        frame = av.VideoFrame.from_numpy_buffer(yuv, format="yuv420p")
        frame.pts, frame.time_base = pts, self.time_base
        self.container.mux(self.stream.encode(frame))
        self._last_pts = pts
        self.frames += 1

    def close(self) -> Path:
        """Flush the encoder, write the index, rename into place."""
        try:
            self.container.mux(self.stream.encode(None))
            self.container.close()
            os.replace(self.temp, self.path)
        finally:
            self.temp.unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        """Drop the file (nothing was written, or the run failed before its first frame)."""
        try:
            self.container.close()
        finally:
            self.temp.unlink(missing_ok=True)
