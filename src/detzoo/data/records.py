"""The one record type every dataset format is read into, and the checks every reader shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..common.errors import DataError

# A box may stick out of its image by this many pixels (rounding, 1-based VOC coordinates); it is clipped.
# Beyond that the box is an error.
BOX_TOLERANCE_PX = 2.0


@dataclass
class ImageRecord:
    """One image and its objects. Boxes are xyxy in pixels of the image file, labels are 0..K-1."""

    path: Path
    width: int
    height: int
    boxes: np.ndarray  # float32 [M, 4]
    labels: np.ndarray  # int64 [M]
    iscrowd: np.ndarray  # bool [M]: ignore regions in COCO evaluation
    difficult: np.ndarray  # bool [M]: ignored by VOC evaluation
    image_id: int
    origin: str  # where the annotation was read, for error messages ("a.xml", "list.txt:12")

    @property
    def num_objects(self) -> int:
        return len(self.labels)


@dataclass
class DetectionData:
    """A dataset read from disk: records plus the class list (label i is ``class_names[i]``)."""

    records: list[ImageRecord]
    class_names: list[str]
    source: str
    format: str
    category_ids: list[int] = field(default_factory=list)  # COCO id of each label (1..K when not COCO)
    coco_json: Path | None = None  # the original COCO annotation file, used as evaluation ground truth
    skipped: int = 0  # bad samples skipped (data.skip_bad=true)
    problems: list[str] = field(default_factory=list)  # one message per skipped sample (file, line/object, what)

    def __post_init__(self) -> None:
        if not self.category_ids:
            self.category_ids = list(range(1, len(self.class_names) + 1))

    def __len__(self) -> int:
        return len(self.records)


class Problems:
    """Collects bad-input findings: raise at once, or (skip_bad) count the skipped samples and keep every
    message (``detzoo inspect`` lists them all)."""

    def __init__(self, skip_bad: bool):
        self.skip_bad = skip_bad
        self.skipped = 0
        self.messages: list[str] = []

    @property
    def examples(self) -> list[str]:
        return self.messages[:5]

    def bad(self, message: str) -> None:
        """Report one bad sample; raises DataError unless bad samples are skipped."""
        if not self.skip_bad:
            raise DataError(message)
        self.skipped += 1
        self.messages.append(message)


def make_record(
    path: Path,
    width: int,
    height: int,
    boxes: list[list[float]],
    labels: list[int],
    origin: str,
    image_id: int,
    iscrowd: list[bool] | None = None,
    difficult: list[bool] | None = None,
    object_names: list[str] | None = None,
) -> ImageRecord:
    """Validate boxes against the image size and build a record. Raises DataError naming the object."""
    box_array = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    names = object_names or [f"object {i}" for i in range(len(box_array))]
    for i, (x1, y1, x2, y2) in enumerate(box_array):
        if not np.isfinite([x1, y1, x2, y2]).all():
            raise DataError(f"{origin}: {names[i]}: box {[x1, y1, x2, y2]} is not finite")
        if x2 <= x1 or y2 <= y1:
            raise DataError(f"{origin}: {names[i]}: box {_fmt(box_array[i])} has no area")
        tol = BOX_TOLERANCE_PX
        if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
            raise DataError(
                f"{origin}: {names[i]}: box {_fmt(box_array[i])} lies outside the {width}x{height} image"
            )
    if len(box_array):
        np.clip(box_array[:, 0::2], 0, width, out=box_array[:, 0::2])
        np.clip(box_array[:, 1::2], 0, height, out=box_array[:, 1::2])
        degenerate = (box_array[:, 2] <= box_array[:, 0]) | (box_array[:, 3] <= box_array[:, 1])
        if degenerate.any():
            i = int(np.flatnonzero(degenerate)[0])
            raise DataError(f"{origin}: {names[i]}: box has no area inside the {width}x{height} image")
    count = len(box_array)
    return ImageRecord(
        path=path,
        width=int(width),
        height=int(height),
        boxes=box_array,
        labels=np.asarray(labels, dtype=np.int64).reshape(count),
        iscrowd=np.asarray(iscrowd if iscrowd is not None else [False] * count, dtype=bool).reshape(count),
        difficult=np.asarray(difficult if difficult is not None else [False] * count, dtype=bool).reshape(count),
        image_id=image_id,
        origin=origin,
    )


def _fmt(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box.tolist()) + "]"


def require_image_file(path: Path, origin: str) -> None:
    if not path.is_file():
        raise DataError(f"{origin}: image file not found: {path}")


def image_size(path: Path, origin: str) -> tuple[int, int]:
    """(width, height) of the stored pixels, from the image header; DataError if unreadable."""
    require_image_file(path, origin)
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def class_index(names: list[str], name: str, origin: str) -> int:
    try:
        return names.index(name)
    except ValueError:
        raise DataError(f"{origin}: unknown class '{name}' (known: {', '.join(names)})") from None
