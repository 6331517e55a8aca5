"""An image folder read as a video: the frames of a MOTChallenge sequence (``img1/000001.jpg`` ...), or frames a
camera saved one by one, in file-name order, for tracking (``detzoo predict MODEL FOLDER --track``,
``detzoo eval MODEL FOLDER --gt gt.txt``). It is opened like a video file (``open_input``), so the decoding
thread, the batching and the outputs are the video path's; the frame rate comes from the sequence's
``seqinfo.ini`` (``frameRate``) beside or above the folder, else 25 frames/s.
"""

from __future__ import annotations

import configparser
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..common.errors import DataError
from ..data.loader import decode_rgb
from ..data.records import image_size
from .sources import ImageSource, VideoSource
from .video_io import DEFAULT_FPS, VideoInfo, VideoInput

SEQINFO = "seqinfo.ini"


@dataclass(frozen=True)
class ImageFrame:
    index: int
    timestamp: float
    path: Path
    size: tuple[int, int]  # (width, height) every frame must have: the first one's
    origin: str

    def rgb(self) -> np.ndarray:
        return decode_rgb(self.path, origin=self.origin, size=self.size).permute(1, 2, 0).numpy()


class ImageSequenceInput:
    """The ``VideoInput`` interface (``info``, ``frames()``, ``close()``) over a sorted list of images."""

    def __init__(self, source: VideoSource):
        self.source = source
        self.paths = list(source.images)
        self.size = image_size(self.paths[0], source.url)
        fps = source.fps or DEFAULT_FPS
        self.info = VideoInfo(self.size[0], self.size[1], fps, len(self.paths))

    def frames(self) -> Iterator[ImageFrame]:
        origin = f"the sequence's first frame ({self.paths[0].name})"
        for index, path in enumerate(self.paths):
            yield ImageFrame(index, float(index / self.info.fps), path, self.size, origin)

    def close(self) -> None:
        pass


def open_input(source: VideoSource) -> VideoInput | ImageSequenceInput:
    return ImageSequenceInput(source) if source.images else VideoInput(source)


def sequence_fps(folder: Path) -> Fraction | None:
    """``frameRate`` of a ``seqinfo.ini`` in the folder or its parent (MOTChallenge: ``SEQ/seqinfo.ini`` beside
    ``SEQ/img1/``); None when there is none."""
    for candidate in (folder / SEQINFO, folder.parent / SEQINFO):
        if candidate.is_file():
            info = configparser.ConfigParser()
            try:
                info.read(candidate)
                rate = Fraction(info["Sequence"]["frameRate"])
            except (configparser.Error, KeyError, ValueError, ZeroDivisionError) as exc:
                raise DataError(f"{candidate}: no usable [Sequence] frameRate ({exc})") from None
            if rate <= 0:
                raise DataError(f"{candidate}: frameRate must be positive, got {rate}")
            return rate
    return None


def image_sequence(source: ImageSource, fps: Fraction | None = None) -> VideoSource:
    """Images (a folder, a glob) as one video source named after the folder (``img1`` of a MOTChallenge
    sequence is named after the sequence)."""
    folder = source.paths[0].parent
    name = folder.parent.name if folder.name == "img1" and folder.parent.name else folder.name or "frames"
    return VideoSource(str(source.root), name, live=False, reconnect=False, images=tuple(source.paths),
                       fps=fps or sequence_fps(folder))
