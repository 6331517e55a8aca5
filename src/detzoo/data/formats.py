"""Open any supported dataset (COCO, VOC, TXT, YOLO) from a :class:`DatasetSpec`, guessing the format."""

from __future__ import annotations

from pathlib import Path

from ..common.config import DatasetSpec
from .coco import read_coco
from .problems import Problems
from .records import DataError, DetectionData
from .txt import read_txt
from .voc import is_vocdevkit, read_voc, voc_xml_folder
from .yolo import is_yolo_folder, read_yolo

FORMATS = ("coco", "voc", "txt", "yolo")


def detect_format(path: Path) -> str:
    if path.is_file():
        if path.suffix == ".json":
            return "coco"
        if path.suffix == ".txt":
            return "txt"
        raise DataError(f"{path}: cannot tell the dataset format from the file type; set format: coco|txt")
    if not path.exists():
        raise DataError(f"{path}: dataset not found")
    if is_vocdevkit(path):
        return "voc"
    if is_yolo_folder(path):
        return "yolo"
    if (path / "annotations").is_dir() and any((path / "annotations").glob("instances_*.json")):
        return "coco"
    if voc_xml_folder(path) is not None:
        return "voc"
    raise DataError(f"{path}: no COCO annotations/, VOC XML, YOLO images/+labels/ or TXT list found here")


def _coco_file(path: Path, split: str | None) -> Path:
    """A COCO dataset folder -> its ``annotations/instances_<split>.json``."""
    if path.is_file():
        return path
    candidates = sorted((path / "annotations").glob(f"instances_{split or '*'}.json"))
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise DataError(f"{path}: name the split of the COCO annotations (split: ...); found {found}")
    return candidates[0]


def read_dataset(spec: DatasetSpec, class_names: list[str] | None = None, skip_bad: bool = False) -> DetectionData:
    """Read one dataset into records. Bad samples raise DataError, or are skipped and counted."""
    if not spec.path:
        raise DataError("dataset path is empty (set data.train / data.val)")
    path = Path(spec.path).expanduser()
    fmt = detect_format(path) if spec.format == "auto" else spec.format
    images = Path(spec.images).expanduser() if spec.images else None
    problems = Problems(skip_bad)
    if fmt == "coco":
        data = read_coco(_coco_file(path, spec.split), images, class_names, problems)
    elif fmt == "voc":
        data = read_voc(path, spec.split, class_names, problems, images)
    elif fmt == "txt":
        data = read_txt(path, images, class_names, problems)
    elif fmt == "yolo":
        data = read_yolo(path, spec.split, class_names, problems)
    else:
        raise DataError(f"{path}: unknown dataset format '{fmt}' (one of {', '.join(FORMATS)})")
    data.skipped, data.skipped_objects = problems.skipped, problems.skipped_objects
    data.dropped_boxes, data.clipped_boxes = len(problems.dropped), len(problems.clipped)
    data.problems = problems.findings()
    for line in problems.summary():
        print(f"warning: {path}: {line}")
    return data


def read_datasets(specs: list[DatasetSpec], class_names: list[str] | None = None,
                  skip_bad: bool = False) -> DetectionData:
    """Read and concatenate several datasets (e.g. VOC07 + VOC12) with one class list."""
    if not specs:
        raise DataError("no dataset given")
    first = read_dataset(specs[0], class_names, skip_bad)
    for spec in specs[1:]:
        more = read_dataset(spec, first.class_names, skip_bad)
        offset = max((r.image_id for r in first.records), default=-1) + 1
        for record in more.records:
            record.image_id += offset
        first.records.extend(more.records)
        first.skipped += more.skipped
        first.skipped_objects += more.skipped_objects
        first.dropped_boxes += more.dropped_boxes
        first.clipped_boxes += more.clipped_boxes
        first.problems += more.problems
        first.coco_json = None
        first.source += f" + {more.source}"
    return first
