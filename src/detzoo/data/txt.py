"""The reference "other" TXT format: one line per image,
``relative/path.jpg xmin,ymin,xmax,ymax,cls[,iscrowd] ...`` with paths relative to an image root and 1-based
classes. Coordinates are x first, as the reference README says (its code reads them y first; we do not).
"""

from __future__ import annotations

from pathlib import Path

from .records import DataError, DetectionData, Problems, image_size, make_record


def guess_image_root(txt_path: Path) -> Path:
    for candidate in (txt_path.parent / "images", txt_path.parent):
        if candidate.is_dir():
            return candidate
    return txt_path.parent


def _parse_line(line: str, where: str) -> tuple[str, list[list[float]], list[int], list[bool]]:
    parts = line.split()
    image, fields = parts[0], parts[1:]
    boxes, classes, crowd = [], [], []
    for j, field in enumerate(fields):
        values = field.split(",")
        if len(values) not in (5, 6):
            raise DataError(f"{where}: object {j} '{field}' must be xmin,ymin,xmax,ymax,cls[,iscrowd]")
        try:
            box = [float(v) for v in values[:4]]
            cls = int(values[4])
            is_crowd = bool(int(values[5])) if len(values) == 6 else False
        except ValueError:
            raise DataError(f"{where}: object {j} '{field}' has a non-numeric value") from None
        boxes.append(box)
        classes.append(cls)
        crowd.append(is_crowd)
    return image, boxes, classes, crowd


def read_txt(txt_path: Path, image_root: Path | None, class_names: list[str] | None,
             problems: Problems) -> DetectionData:
    try:
        lines = txt_path.read_text().splitlines()
    except FileNotFoundError:
        raise DataError(f"{txt_path}: annotation file not found") from None
    except UnicodeDecodeError:
        raise DataError(f"{txt_path}: not a text file") from None
    root = image_root or guess_image_root(txt_path)
    parsed = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{txt_path}:{number}"
        try:
            parsed.append((where, *_parse_line(line, where)))
        except DataError as exc:
            problems.bad(str(exc))
    names = class_names
    if names is None:
        largest = max((c for *_, classes, _ in parsed for c in classes), default=0)
        names = [str(i) for i in range(1, largest + 1)]
    records = []
    for image_id, (where, image, boxes, classes, crowd) in enumerate(parsed):
        try:
            for j, cls in enumerate(classes):
                if not 1 <= cls <= len(names):
                    raise DataError(f"{where}: object {j}: class {cls} is not in 1..{len(names)}")
            path = root / image
            width, height = image_size(path, where)
            records.append(make_record(path, width, height, boxes, [c - 1 for c in classes], where, image_id,
                                       iscrowd=crowd, object_names=[f"object {j}" for j in range(len(boxes))]))
        except DataError as exc:
            problems.bad(str(exc))
    return DetectionData(records, list(names), str(txt_path), "txt")
