"""The one record type every dataset format is read into, and the checks every reader shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..common.errors import DataError
from .problems import Problems

# A box may stick out of its image by this many pixels (rounding, 1-based VOC coordinates) and is clipped
# silently; beyond that the clipping is counted.
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
    skipped: int = 0  # bad samples (images) skipped (data.skip_bad=true)
    skipped_objects: int = 0  # bad objects skipped (data.skip_bad=true); their images are kept
    dropped_boxes: int = 0  # boxes without area, dropped
    clipped_boxes: int = 0  # boxes past the image edge, clipped
    problems: list[str] = field(default_factory=list)  # every finding in full: skips, drops, clips (inspect)

    def __post_init__(self) -> None:
        if not self.category_ids:
            self.category_ids = list(range(1, len(self.class_names) + 1))

    def __len__(self) -> int:
        return len(self.records)


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
    problems: Problems | None = None,
    annotation_file: str | None = None,
) -> ImageRecord:
    """Check each box against the image size and build a record (the rules: ``data/problems.py``). Boxes
    without area are dropped and boxes past the edge clipped, both counted in ``problems`` under
    ``annotation_file`` (the short name a summary line gives); a bad box is a DataError naming the object,
    or is skipped under skip_bad."""
    problems = problems or Problems(skip_bad=False)
    box_array = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    count = len(box_array)
    names = object_names or [f"object {i}" for i in range(count)]
    clipped = box_array.copy()
    np.clip(clipped[:, 0::2], 0, width, out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0, height, out=clipped[:, 1::2])
    tol = BOX_TOLERANCE_PX
    keep = np.zeros(count, dtype=bool)
    for i, (x1, y1, x2, y2) in enumerate(box_array.tolist()):
        where = f"{origin}: {names[i]}: box {_fmt(box_array[i])}"
        if not np.isfinite(box_array[i]).all():
            problems.bad_object(f"{where} is not finite")
        elif x2 > x1 and y2 > y1 and (x1 >= width + tol or y1 >= height + tol or x2 <= -tol or y2 <= -tol):
            problems.bad_object(f"{where} lies outside the {width}x{height} image")
        elif x2 <= x1 or y2 <= y1 or clipped[i, 2] - clipped[i, 0] < 1 or clipped[i, 3] - clipped[i, 1] < 1:
            problems.drop((annotation_file or origin, names[i]), f"{where} has no area inside the {width}x{height} "
                          "image: dropped")
        else:
            if np.abs(clipped[i] - box_array[i]).max() > tol:
                problems.clip((annotation_file or origin, names[i]), f"{where} extends past the {width}x{height} "
                              "image: clipped")
            keep[i] = True

    def kept(values: list | None, dtype) -> np.ndarray:
        return np.asarray(values if values is not None else [False] * count, dtype=dtype).reshape(count)[keep]

    return ImageRecord(
        path=path,
        width=int(width),
        height=int(height),
        boxes=clipped[keep],
        labels=kept(labels, np.int64),
        iscrowd=kept(iscrowd, bool),
        difficult=kept(difficult, bool),
        image_id=image_id,
        origin=origin,
    )


def _fmt(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box.tolist()) + "]"


def image_under(root: Path, relative: str, origin: str) -> Path:
    """``root / relative`` for an image path read from an annotation file. An absolute path or one that climbs
    out of ``root`` with ``..`` is refused: an annotation file names images inside its dataset, never anywhere
    on the disk (a path is given relative to the image root, e.g. with ``--images`` / ``images:``)."""
    as_windows = PureWindowsPath(relative)  # splits on / and backslash, knows drives
    if as_windows.anchor or PurePosixPath(relative).is_absolute() or ".." in as_windows.parts:
        raise DataError(f"{origin}: image path '{relative}' must be relative to the image root {root} (no absolute "
                        "path, no '..'); give the root with --images / images:")
    return root / relative


def require_image_file(path: Path, origin: str) -> None:
    if not path.is_file():
        raise DataError(f"{origin}: image file not found: {path}")


# EXIF orientations 5-8 turn the stored pixels by 90 degrees: the image is shown with width and height swapped.
EXIF_ORIENTATION_TAG = 0x0112
TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image as viewers show it: EXIF orientation applied (header only)."""
    width, height = image.size
    if image.getexif().get(EXIF_ORIENTATION_TAG, 1) in TRANSPOSED_ORIENTATIONS:
        return height, width
    return width, height


def image_size(path: Path, origin: str) -> tuple[int, int]:
    """(width, height) of the image as viewers show it (EXIF orientation applied), from the header: the size of
    the pixels a reader without an annotated size labels and predicts in. DataError if unreadable."""
    require_image_file(path, origin)
    try:
        with Image.open(path) as image:
            return upright_size(image)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def class_index(names: list[str], name: str, origin: str) -> int:
    try:
        return names.index(name)
    except ValueError:
        raise DataError(f"{origin}: unknown class '{name}' (known: {', '.join(names)})") from None
