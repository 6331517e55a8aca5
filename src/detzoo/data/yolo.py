"""YOLO labels: ``images/[split/]*.jpg`` + ``labels/[split/]*.txt`` with normalised ``cls cx cy w h`` lines
(0-based classes). Class names come from the config, else ``classes.txt`` or a ``data.yaml`` ``names:`` entry
in the dataset folder; when both exist, the folder's classes are matched to the config's by name. An image without a label file has no objects.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .problems import Problems
from .records import DataError, DetectionData, image_size, make_record
from .voc import IMAGE_SUFFIXES


def is_yolo_folder(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "labels").is_dir()


def yolo_class_names(folder: Path) -> list[str] | None:
    if (folder / "classes.txt").is_file():
        return [n.strip() for n in (folder / "classes.txt").read_text().splitlines() if n.strip()]
    for name in ("data.yaml", "dataset.yaml"):
        if (folder / name).is_file():
            names = (yaml.safe_load((folder / name).read_text()) or {}).get("names")
            if isinstance(names, dict):
                return [str(names[k]) for k in sorted(names)]
            if isinstance(names, list):
                return [str(n) for n in names]
    return None


def read_yolo(folder: Path, split: str | None, class_names: list[str] | None, problems: Problems) -> DetectionData:
    file_names = yolo_class_names(folder)
    names = class_names or file_names
    if not names:
        raise DataError(f"{folder}: YOLO labels need class names: set data.classes, or add classes.txt "
                        "or data.yaml with 'names:'")
    label_of_number = list(range(len(names)))  # the label of each class number in the label files
    if class_names and file_names and file_names != class_names:  # map the folder's own names by name
        unknown = [n for n in file_names if n not in class_names]
        if unknown:
            raise DataError(f"{folder}: classes {unknown} of its classes.txt/data.yaml are not among the "
                            f"{len(class_names)} classes given (data.classes, or the model's): {', '.join(class_names)}")
        label_of_number = [class_names.index(n) for n in file_names]
    image_dir = folder / "images" / split if split else folder / "images"
    label_dir = folder / "labels" / split if split else folder / "labels"
    if not image_dir.is_dir():
        raise DataError(f"{folder}: image folder not found: {image_dir}")
    images = sorted(p for p in image_dir.iterdir() if p.suffix in IMAGE_SUFFIXES)
    records = []
    for image_id, image_path in enumerate(images):
        label_path = label_dir / (image_path.stem + ".txt")
        try:
            width, height = image_size(image_path, str(image_path))
        except DataError as exc:
            problems.bad(str(exc))
            continue
        boxes, labels, what = [], [], []
        lines = label_path.read_text().splitlines() if label_path.is_file() else []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                cls, box = _parse_line(line, f"{label_path}:{number}", len(label_of_number), width, height)
            except DataError as exc:
                problems.bad_object(str(exc))
                continue
            boxes.append(box)
            labels.append(label_of_number[cls])
            what.append(f"line {number}")
        records.append(make_record(image_path, width, height, boxes, labels, str(label_path), image_id,
                                   object_names=what, problems=problems, annotation_file=label_path.name))
    return DetectionData(records, list(names), str(folder), "yolo")


def _parse_line(line: str, where: str, class_count: int, width: int, height: int) -> tuple[int, list[float]]:
    """``cls cx cy w h`` (normalised) -> (class, xyxy box in pixels); DataError naming the line."""
    values = line.split()
    if len(values) != 5:
        raise DataError(f"{where}: expected 'cls cx cy w h', got '{line.strip()}'")
    try:
        cls = int(values[0])
        cx, cy, w, h = (float(v) for v in values[1:])
    except ValueError:
        raise DataError(f"{where}: non-numeric value in '{line.strip()}'") from None
    if not 0 <= cls < class_count:
        raise DataError(f"{where}: class {cls} is not in 0..{class_count - 1}")
    return cls, [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
