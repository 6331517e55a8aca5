"""COCO JSON reader: ``annotations/instances_<split>.json`` + an image folder.

Category ids (1..90, not contiguous) map to labels 0..K-1 in id order, or by name to given classes (a
model's: its order, a subset or the same set); ``category_ids`` maps them back when results are written. ``iscrowd`` boxes are kept and flagged (ignore regions for evaluation).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .problems import Problems
from .records import DataError, DetectionData, image_under, make_record, require_image_file


def guess_image_root(json_path: Path) -> Path:
    """``.../annotations/instances_val2017.json`` -> ``.../val2017`` (or ``images/``, or the json's folder)."""
    split = json_path.stem.split("_", 1)[1] if "_" in json_path.stem else json_path.stem
    parent = json_path.parent
    for candidate in (parent.parent / split, parent.parent / "images" / split, parent / split,
                      parent.parent / "images", parent / "images"):
        if candidate.is_dir():
            return candidate
    return parent


def load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a COCO object with 'images', 'annotations', 'categories'")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: missing or invalid '{key}' list")
    if not isinstance(data.get("annotations", []), list):
        raise DataError(f"{path}: 'annotations' must be a list")
    return data


def _xyxy(bbox, where: str) -> list[float]:
    """COCO ``[x, y, w, h]`` -> ``[x1, y1, x2, y2]``; DataError when it is not four numbers."""
    if not (isinstance(bbox, list) and len(bbox) == 4):
        raise DataError(f"{where}: 'bbox' must be [x, y, w, h], got {bbox!r}")
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise DataError(f"{where}: 'bbox' {bbox!r} has a non-numeric value") from None
    return [x, y, x + w, y + h]


def read_coco(json_path: Path, image_root: Path | None, class_names: list[str] | None,
              problems: Problems) -> DetectionData:
    data = load_json(json_path)
    root = image_root or guess_image_root(json_path)
    try:
        categories = sorted(data["categories"], key=lambda c: int(c["id"]))
        cat_names = [str(c["name"]) for c in categories]
        cat_ids = [int(c["id"]) for c in categories]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{json_path}: every category needs an integer 'id' and a 'name'") from None
    if class_names is not None and class_names != cat_names:
        unknown = [n for n in cat_names if n not in class_names]
        if unknown:
            raise DataError(f"{json_path}: categories {unknown} are not among the {len(class_names)} classes "
                            f"given (data.classes, or the model's): {', '.join(class_names)}")
    names = class_names if class_names is not None else cat_names
    label_of_id = {cid: names.index(name) for cid, name in zip(cat_ids, cat_names)}

    per_image = defaultdict(list)
    for index, ann in enumerate(data.get("annotations", [])):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise DataError(f"{json_path}: annotation #{index} has no 'image_id'")
        per_image[ann["image_id"]].append((index, ann))

    records = []
    for image in data["images"]:
        try:
            image_id, file_name = int(image["id"]), str(image["file_name"])
            width, height = int(image["width"]), int(image["height"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{json_path}: image entry {image!r:.120} needs 'id', 'file_name', 'width', "
                            "'height'") from None
        origin = f"{json_path}: image id {image_id} ({file_name})"
        try:
            path = image_under(root, file_name, origin)
            require_image_file(path, origin)
        except DataError as exc:
            problems.bad(str(exc))
            continue
        boxes, labels, crowd, difficult, what_list = [], [], [], [], []
        for index, ann in per_image.get(image_id, []):
            what = f"annotation id {ann.get('id', '#' + str(index))}"
            cid = ann.get("category_id")
            try:
                box = _xyxy(ann.get("bbox"), f"{origin}: {what}")
                if cid not in label_of_id:
                    raise DataError(f"{origin}: {what}: unknown category_id {cid!r}")
            except DataError as exc:
                problems.bad_object(str(exc))
                continue
            boxes.append(box)
            labels.append(label_of_id[cid])
            crowd.append(bool(ann.get("iscrowd", 0)))
            difficult.append(bool(ann.get("difficult", 0)))
            what_list.append(what)
        records.append(make_record(path, width, height, boxes, labels, origin, image_id, iscrowd=crowd,
                                   difficult=difficult, object_names=what_list, problems=problems,
                                   annotation_file=json_path.name))
    return DetectionData(records, list(names), str(json_path), "coco",
                         category_ids=category_ids_by_name(names, cat_names, cat_ids), coco_json=json_path)


def category_ids_by_name(names: list[str], cat_names: list[str], cat_ids: list[int]) -> list[int]:
    """The COCO id of each class, matched by name: the file's id for its categories, fresh ids after the
    file's largest for classes it does not have, so no two classes share an id (and no detection of a class
    missing from the file is scored as another class)."""
    fresh = iter(range(max(cat_ids, default=0) + 1, max(cat_ids, default=0) + 1 + len(names)))
    return [cat_ids[cat_names.index(name)] if name in cat_names else next(fresh) for name in names]
