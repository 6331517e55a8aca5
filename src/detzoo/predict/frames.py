"""Frames from a video source, decoded in a background thread (PyAV releases the GIL while FFmpeg decodes, so
decoding overlaps the model).

- A file: every frame, or every ``stride``-th, in a frame range, in order, through a short queue: the decoder
  waits for the consumer, so memory stays flat on hours of video and no frame is lost. The end of the file
  ends the frames.
- A live source (camera, stream, or a file with ``live``): only the freshest frame is kept; a frame replaced
  before the consumer took it is counted in ``dropped``. A file read live is paced at its frame rate, like a
  camera. Streams and cameras are reopened after an error or an end, waiting 0.5 s, 1 s, 2 s ... at most
  ``MAX_BACKOFF_S`` between tries (``backoff``); after ``max_retries`` failed tries in a row the error is raised.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..common.errors import ConfigError, DataError
from .image_sequence import open_input
from .sources import VideoSource
from .video_io import DecodedFrame, VideoInfo, VideoInput, describe

FIRST_BACKOFF_S, MAX_BACKOFF_S = 0.5, 8.0
MAX_RETRIES = 10
QUEUE_FRAMES = 16  # decoded frames waiting for the model (a few batches)
CLOSE_WAIT_S = 2.0
_END = object()


@dataclass(frozen=True)
class Frame:
    index: int  # position in the source (a gap means frames skipped by the stride or dropped)
    timestamp: float  # seconds: a file's presentation time; a live source's time since the run started
    rgb: np.ndarray  # uint8 [H,W,3]


@dataclass
class ReadStats:
    decoded: int = 0  # frames the decoder produced (including those skipped or dropped)
    dropped: int = 0  # live: frames replaced by a newer one before the consumer took them
    reconnects: int = 0
    decode_s: float = 0.0  # time spent decoding and converting to RGB


def frame_range(text: str | None) -> tuple[int, int | None]:
    """``START:END`` (end exclusive, either may be left out) -> (start, end)."""
    if not text:
        return 0, None
    start, sep, end = text.partition(":")
    try:
        first, last = int(start or 0), (int(end) if end else None)
    except ValueError:
        first, last = -1, None
    if not sep or first < 0 or (last is not None and last <= first):
        raise ConfigError(f"--frames {text}: expected START:END frame numbers (END exclusive, 0 <= START < END; "
                          "either may be left out, e.g. 100: or :500)")
    return first, last


class FrameReader:
    """Iterate to get ``Frame``s; ``info`` is the source's size and rate; ``stats`` the counts. ``close()`` (or
    leaving the iteration) stops the decoding thread."""

    def __init__(self, source: VideoSource, stride: int = 1, start: int = 0, end: int | None = None,
                 max_retries: int = MAX_RETRIES, backoff: tuple[float, float] = (FIRST_BACKOFF_S, MAX_BACKOFF_S),
                 notify: Callable[[str], None] | None = None,
                 opener: Callable[[VideoSource], VideoInput] = open_input):
        if stride < 1:
            raise ConfigError(f"--vid-stride must be at least 1, got {stride}")
        if source.live and (stride != 1 or start or end is not None):
            raise ConfigError(f"{describe(source)}: --vid-stride and --frames apply to frames read in order; a live "
                              "source gives its freshest frame (pass --no-live to read a file frame by frame)")
        self.source, self.stride, self.start, self.end = source, stride, start, end
        self.max_retries, self.backoff = max_retries, backoff
        self.notify, self.opener = notify or (lambda text: None), opener
        self.stats = ReadStats()
        self._stop = threading.Event()
        self._input = opener(source)  # the first open fails here, in the caller's thread: one clear line
        self.info: VideoInfo = self._input.info
        if not source.live and self.info.frames is not None and start >= self.info.frames:
            self._input.close()
            raise ConfigError(f"--frames starts at frame {start}, but {describe(source)} has {self.info.frames} "
                              "frames")
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self._latest: DecodedFrame | None = None
        self._condition = threading.Condition()
        self._finished: BaseException | object | None = None  # _END or the error that ended the reading
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="detzoo-frames", daemon=True)
        self._thread.start()

    @property
    def expected_frames(self) -> int | None:
        """How many frames a file run will yield (None when the container does not say, or live)."""
        if self.source.live or self.info.frames is None:
            return None
        last = min(self.info.frames, self.end) if self.end is not None else self.info.frames
        return max(0, -(-(last - self.start) // self.stride))

    @property
    def queued(self) -> int:
        """Decoded frames waiting for the consumer (files; at most ``QUEUE_FRAMES``)."""
        return self._queue.qsize()

    @property
    def reading(self) -> bool:
        """Whether the decoding thread still runs (False after the end, an error or ``close()``)."""
        return self._thread.is_alive()

    # ------------------------------------------------------------------ decoding thread

    def _run(self) -> None:
        try:
            if self.source.live:
                self._read_live()
            else:
                self._read_in_order()
            outcome = _END
        except BaseException as exc:  # handed to the consumer, which raises it in its own thread
            outcome = exc
        finally:
            self._input.close()
        if self.source.live:
            with self._condition:
                self._finished = outcome
                self._condition.notify_all()
        else:
            self._put(outcome)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read_in_order(self) -> None:
        clock = time.perf_counter()
        for decoded in self._input.frames():
            self.stats.decoded += 1
            if self.end is not None and decoded.index >= self.end:
                break
            if decoded.index < self.start or (decoded.index - self.start) % self.stride:
                continue
            frame = Frame(decoded.index, decoded.timestamp, decoded.rgb())
            self.stats.decode_s += time.perf_counter() - clock
            if not self._put(frame):
                return
            clock = time.perf_counter()

    def _read_live(self) -> None:
        failures, index = 0, 0
        pace = _Pacer() if self.source.is_file else None
        while not self._stop.is_set():
            try:
                clock = time.perf_counter()
                for decoded in self._input.frames():
                    failures = 0
                    self.stats.decode_s += time.perf_counter() - clock
                    if pace is not None:
                        pace.wait(decoded.timestamp, self._stop)
                    self._offer(DecodedFrame(index, time.monotonic() - self._started, decoded.frame))
                    self.stats.decoded += 1
                    index += 1
                    if self._stop.is_set():
                        return
                    clock = time.perf_counter()
                if not self.source.reconnect:
                    return
                error = "the stream ended"
            except DataError as exc:
                if not self.source.reconnect:
                    raise
                error = _reason(exc, self.source)
            failures += 1
            self._input.close()
            self._input = self._reopen(failures, error)

    def _reopen(self, failures: int, error: str) -> VideoInput:
        while True:
            if failures > self.max_retries:
                raise DataError(f"{describe(self.source)}: lost and not reopened after {self.max_retries} tries "
                                f"(last: {error})")
            delay = min(self.backoff[1], self.backoff[0] * 2 ** (failures - 1))
            self.notify(f"{describe(self.source)}: {error}; reconnecting in {delay:g} s "
                        f"(try {failures}/{self.max_retries})")
            if self._stop.wait(delay):
                raise _Stopped
            try:
                opened = self.opener(self.source)
                self.stats.reconnects += 1
                return opened
            except DataError as exc:
                failures, error = failures + 1, _reason(exc, self.source)

    def _offer(self, decoded: DecodedFrame) -> None:
        with self._condition:
            if self._latest is not None:
                self.stats.dropped += 1
            self._latest = decoded
            self._condition.notify_all()

    # ------------------------------------------------------------------ consumer side

    def __iter__(self) -> Iterator[Frame]:
        try:
            while True:
                frame = self._take_live() if self.source.live else self._take_in_order()
                if frame is None:
                    return
                yield frame
        finally:
            self.close()

    def _take_in_order(self) -> Frame | None:
        item = self._queue.get()
        if item is _END:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def _take_live(self) -> Frame | None:
        with self._condition:
            while self._latest is None and self._finished is None:
                self._condition.wait()
            decoded, self._latest = self._latest, None
            finished = self._finished
        if decoded is None:
            if isinstance(finished, _Stopped) or finished is _END:
                return None
            raise finished
        clock = time.perf_counter()
        rgb = decoded.rgb()
        self.stats.decode_s += time.perf_counter() - clock
        return Frame(decoded.index, decoded.timestamp, rgb)

    def close(self) -> None:
        """Stop decoding. A live reader blocked on a silent network source is left to its timeout (the thread
        is a daemon and closes its own input)."""
        self._stop.set()
        with self._condition:
            self._condition.notify_all()
        deadline = time.monotonic() + CLOSE_WAIT_S
        while self._thread.is_alive() and (not self.source.live or time.monotonic() < deadline):
            try:  # unblock a decoder waiting on a full queue
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)


def _reason(error: DataError, source: VideoSource) -> str:
    """An input error without the source's name in front (the reconnect messages name it once)."""
    return str(error).removeprefix(f"{describe(source)}: ")


class _Stopped(Exception):
    """close() was called while the reader waited to reconnect."""


class _Pacer:
    """Releases frames at their presentation times (a file read live behaves like a camera); resynchronises
    when the timestamps jump (a seek, a reconnect) or the reader falls more than a second behind."""

    def __init__(self):
        self.origin: tuple[float, float] | None = None  # (timestamp, monotonic clock) of the reference frame

    def wait(self, timestamp: float, stop: threading.Event) -> None:
        now = time.monotonic()
        if self.origin is None:
            self.origin = (timestamp, now)
            return
        delay = (timestamp - self.origin[0]) - (now - self.origin[1])
        if not -1.0 <= delay <= 1.0:
            self.origin = (timestamp, now)
        elif delay > 0:
            stop.wait(delay)
