"""What the Python API's ``predict`` returns: one ``Result`` per image or video frame - the detections (boxes,
scores, labels, class names), the drawn image (``plot``, the drawing of ``detzoo predict``:
``visualize.draw``), ``save`` (the drawn image to a file, as ``detzoo predict`` writes it), ``to_dict`` (the
per-image JSON schema of ``detzoo predict`` and the service) and ``to_coco``.

``predict_results`` takes whatever ``detzoo predict`` takes as a source (a file, a folder, a glob, a video, a
camera index, a stream URL: ``sources.resolve_source``) and in-memory images (``arrays``), and yields the
results through the same Predictor calls the command uses.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..common.errors import ConfigError
from ..common.structures import Detections
from ..data.loader import decode_rgb
from ..data.preflight import apply_findings, check_files
from ..models.selection import SelectOptions
from ..visualize import draw, save_drawn
from .arrays import rgb_tensors
from .outputs import frame_record, output_names
from .predictor import Predictor, unlabelled_data
from .sources import ImageSource, VideoSource, is_image, resolve_source

Source = str | Path | int | Any  # a path-like source, or in-memory image(s) (``arrays``)


@dataclass
class Result:
    """The detections of one image or video frame (boxes in its original pixels)."""

    detections: Detections
    file_name: str  # the drawn image's name under a folder given to ``save`` (a source's own relative path)
    path: Path | None = None  # the image file; None for in-memory images and video frames
    image: np.ndarray | torch.Tensor | None = None  # the pixels (uint8 RGB) when in memory; files are read again
    frame: int | None = None  # a video frame's index in its source
    timestamp: float | None = None  # a video frame's time, seconds
    counts: dict | None = None  # tracking with lines or zones: their counts after this frame

    def __len__(self) -> int:
        return len(self.detections)

    @property
    def boxes(self) -> torch.Tensor:
        """float [D, 4], x1 y1 x2 y2 in the original image's pixels."""
        return self.detections.boxes

    @property
    def scores(self) -> torch.Tensor:
        return self.detections.scores

    @property
    def labels(self) -> torch.Tensor:
        """int64 [D], class indices into ``class_names``."""
        return self.detections.labels

    @property
    def track_ids(self) -> torch.Tensor | None:
        """int64 [D]: each detection's identity across frames (``Model.track``), None otherwise."""
        return self.detections.track_ids

    @property
    def class_names(self) -> list[str]:
        """Every class the model knows, in label order."""
        return self.detections.class_names

    @property
    def names(self) -> list[str]:
        """The class name of each detection."""
        return [self.class_names[label] for label in self.labels.tolist()]

    def original(self) -> np.ndarray:
        """The image as predicted on: uint8 RGB [H,W,3] (EXIF orientation applied to files)."""
        image = self.image if self.image is not None else decode_rgb(self.path)
        return image.permute(1, 2, 0).numpy() if isinstance(image, torch.Tensor) else image

    def plot(self, channels: str = "rgb") -> np.ndarray:
        """The image with its detections drawn as ``detzoo predict`` draws them: uint8 [H,W,3], RGB (Pillow,
        matplotlib) or ``channels="bgr"`` (OpenCV's ``imshow`` / ``imwrite``)."""
        if channels not in ("rgb", "bgr"):
            raise ConfigError(f"channels must be 'rgb' or 'bgr', got {channels!r}")
        drawn = draw(self.original(), self.detections)
        return np.ascontiguousarray(drawn[:, :, ::-1]) if channels == "bgr" else drawn

    def save(self, path: str | Path = ".") -> Path:
        """Write the drawn image: to ``path`` when it names an image file (its suffix picks the format), else
        into the folder ``path`` under ``file_name`` (a source's own name and format, as ``detzoo predict``
        writes it). Written atomically; never over the source image. Returns the file written."""
        path = Path(path)
        target = path if is_image(path) else path / self.file_name
        if self.path is not None and target.resolve() == self.path.resolve():
            raise ConfigError(f"{target}: the drawn image would replace the source image; save elsewhere")
        return save_drawn(self.original(), self.detections, target)

    def to_dict(self) -> dict:
        """``{"image", "image_id", "detections": [{"box", "score", "label", "class_name"}]}`` (the per-image JSON
        of ``detzoo predict`` and the service); video frames add ``frame`` and ``timestamp``."""
        if self.frame is not None:
            record = frame_record(self.detections, self.frame, self.timestamp or 0.0)
            return record if self.counts is None else {**record, "counts": self.counts}
        return self.detections.to_dict()

    def to_coco(self, category_ids: list[int] | None = None) -> list[dict]:
        """COCO result entries (``bbox`` x y w h); category id = class index + 1 unless ``category_ids`` maps
        them (a COCO dataset's own ids)."""
        return self.detections.to_coco(category_ids or list(range(1, len(self.class_names) + 1)))


def _paths_only(source: Any) -> bool:
    return isinstance(source, (list, tuple)) and bool(source) and all(isinstance(s, (str, Path)) for s in source)


def predict_results(predictor: Predictor, source: Source, options: SelectOptions | None = None, *,
                    channels: str | None = None, recursive: bool = False, live: bool | None = None,
                    vid_stride: int = 1, frames: str | None = None, endless: bool = True) -> Iterator[Result]:
    """Results for ``source``, one image or frame at a time (see the module docstring). The source is checked
    (and a video opened) here, so a bad one is an error before the first result; ``endless=False`` refuses
    cameras and streams, which never end."""
    path_like = isinstance(source, (str, Path, int)) and not isinstance(source, bool)
    if not path_like and not _paths_only(source):  # images in memory; rgb_tensors names anything else
        images = rgb_tensors(source, channels)
        found = predictor.predict_decoded(images, options)
        return (Result(det, f"image{i}.jpg", image=images[i]) for i, det in enumerate(found))
    if _paths_only(source):
        paths = [Path(p) for p in source]
        for path in paths:
            if not (path.is_file() and is_image(path)):
                raise ConfigError(f"{path}: not an image file")
        resolved: ImageSource | VideoSource = ImageSource(paths, Path(os.path.commonpath(
            [str(p.resolve().parent) for p in paths])))
    else:
        resolved = resolve_source(str(source), recursive, live)
    if isinstance(resolved, VideoSource):
        return _video_results(predictor, resolved, options, vid_stride, frames, endless)
    return _image_results(predictor, resolved, options)


def _image_results(predictor: Predictor, source: ImageSource, options: SelectOptions | None) -> Iterator[Result]:
    # every image checked first (data.preflight), as `detzoo predict` does: all that cannot be read named at once
    apply_findings(check_files(source.paths), skip_bad=False, hint="leave them out of the source")
    names = output_names(source.paths, source.root)
    data = unlabelled_data(source.paths, predictor.class_names)

    def results() -> Iterator[Result]:
        for det in predictor.predict_data(data, options):
            path = source.paths[det.image_id]
            yield Result(det, str(names[path].parent / path.name), path=path)

    return results()


def _video_results(predictor: Predictor, source: VideoSource, options: SelectOptions | None, vid_stride: int,
                   frames: str | None, endless: bool) -> Iterator[Result]:
    from .video import VideoPrediction

    _refuse_endless(source, endless, "predict")
    return _frame_results(VideoPrediction(predictor, source, options, vid_stride=vid_stride, frames=frames))


def track_results(predictor: Predictor, source: Source, options: SelectOptions | None = None, *, lines=(),
                  zones=(), live: bool | None = None, vid_stride: int = 1, frames: str | None = None,
                  endless: bool = False) -> Iterator[Result]:
    """``Predictor.track`` as ``Result``s: a video file, camera, stream or image folder (read as a sequence);
    each result's detections carry ``track_ids``, and ``counts`` the lines' and zones' state."""
    if isinstance(source, (str, Path, int)) and not isinstance(source, bool):
        source = resolve_source(str(source), live=live)
    if isinstance(source, VideoSource):
        _refuse_endless(source, endless, "track")
    return _frame_results(predictor.track(source, options, lines=lines, zones=zones, vid_stride=vid_stride,
                                          frames=frames))


def _refuse_endless(source: VideoSource, endless: bool, verb: str) -> None:
    if source.reconnect and not endless:
        raise ConfigError(f"{source.url}: a camera or stream never ends; iterate {verb}(..., stream=True) to get "
                          "its frames as they come")


def _frame_results(run) -> Iterator[Result]:
    """A video prediction or tracking run (already opened, so a bad source failed before this) as Results,
    closed when the iteration ends or is abandoned."""
    name = run.source.name

    def results() -> Iterator[Result]:
        try:
            for frame in run:
                yield Result(frame.detections, f"{name}_{frame.index:06d}.jpg", image=frame.image,
                             frame=frame.index, timestamp=frame.timestamp, counts=getattr(frame, "counts", None))
        finally:
            run.close()

    return results()
