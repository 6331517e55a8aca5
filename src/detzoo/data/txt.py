"""The reference "other" TXT format: one line per image,
``relative/path.jpg xmin,ymin,xmax,ymax,cls[,iscrowd] ...`` with paths relative to an image root and 1-based
classes. Coordinates are x first, as the reference README says (its code reads them y first; we do not).
"""

from __future__ import annotations

from pathlib import Path

from .problems import Problems
from .records import DataError, DetectionData, image_size, image_under, make_record


def guess_image_root(txt_path: Path, listed: list[str]) -> Path:
    """The folder under which the first listed images exist: ``images/`` beside the list, the list's folder,
    or its parent (a list in DATASET/ reading ``images/x.jpg`` has DATASET as its root); else the list's
    folder, and the missing image is reported there."""
    sample = listed[:5]
    for candidate in (txt_path.parent / "images", txt_path.parent, txt_path.parent.parent):
        if sample and all((candidate / name).is_file() for name in sample):
            return candidate
    return txt_path.parent


def _parse_object(field: str, index: int, where: str, class_count: int | None) -> tuple[list[float], int, bool]:
    """``xmin,ymin,xmax,ymax,cls[,iscrowd]`` -> (box, 1-based class, iscrowd); DataError naming the object."""
    values = field.split(",")
    if len(values) not in (5, 6):
        raise DataError(f"{where}: object {index} '{field}' must be xmin,ymin,xmax,ymax,cls[,iscrowd]")
    try:
        box = [float(v) for v in values[:4]]
        cls = int(values[4])
        is_crowd = bool(int(values[5])) if len(values) == 6 else False
    except ValueError:
        raise DataError(f"{where}: object {index} '{field}' has a non-numeric value") from None
    if class_count is not None and not 1 <= cls <= class_count:
        raise DataError(f"{where}: object {index}: class {cls} is not in 1..{class_count}")
    return box, cls, is_crowd


def _largest_class(lines: list[tuple[int, list[str]]]) -> int:
    """The largest class number on any well-formed object (the class count when no names are given)."""
    largest = 0
    for _, fields in lines:
        for field in fields:
            values = field.split(",")
            if len(values) in (5, 6) and values[4].strip().lstrip("-").isdigit():
                largest = max(largest, int(values[4]))
    return largest


def read_txt(txt_path: Path, image_root: Path | None, class_names: list[str] | None,
             problems: Problems) -> DetectionData:
    try:
        text = txt_path.read_text()
    except FileNotFoundError:
        raise DataError(f"{txt_path}: annotation file not found") from None
    except UnicodeDecodeError:
        raise DataError(f"{txt_path}: not a text file") from None
    lines = [(number, line.split()) for number, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    root = image_root or guess_image_root(txt_path, [fields[0] for _, fields in lines])
    names = class_names or [str(i) for i in range(1, _largest_class(lines) + 1)]
    records = []
    for image_id, (number, (image, *fields)) in enumerate(lines):
        where = f"{txt_path}:{number}"
        try:
            if fields and "," not in fields[0]:  # 'my photo.jpg 1,2,3,4,1' reads as 'my' + 'photo.jpg' + ...
                raise DataError(f"{where}: '{image} {fields[0]}' - the TXT format separates fields with spaces, so "
                                "an image path cannot contain one (rename the file, or use COCO JSON)")
            path = image_under(root, image, where)
            width, height = image_size(path, where)
        except DataError as exc:
            problems.bad(str(exc))
            continue
        boxes, classes, crowd, what = [], [], [], []
        for j, field in enumerate(fields):
            try:
                box, cls, is_crowd = _parse_object(field, j, where, len(names))
            except DataError as exc:
                problems.bad_object(str(exc))
                continue
            boxes.append(box)
            classes.append(cls - 1)
            crowd.append(is_crowd)
            what.append(f"object {j}")
        records.append(make_record(path, width, height, boxes, classes, where, image_id, iscrowd=crowd,
                                   object_names=what, problems=problems, annotation_file=f"{txt_path.name}:{number}"))
    return DetectionData(records, list(names), str(txt_path), "txt")
