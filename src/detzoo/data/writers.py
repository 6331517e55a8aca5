"""Write records as COCO JSON or as the reference TXT format (``detzoo convert``), and build the COCO
ground-truth dictionary that evaluation hands to pycocotools."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..common.files import write_text
from .records import DataError, DetectionData


def common_image_root(data: DetectionData) -> Path:
    if not data.records:
        return Path(".")
    return Path(os.path.commonpath([str(r.path.parent.resolve()) for r in data.records]))


def to_coco_dict(data: DetectionData, image_root: Path | None = None, ignore_difficult: bool = True) -> dict:
    """COCO ``instances`` dictionary. ``difficult`` objects become ignore regions (``iscrowd``) when asked,
    which is how pycocotools can leave them out of the score."""
    root = image_root or common_image_root(data)
    images, annotations = [], []
    ann_id = 1
    for record in data.records:
        images.append({"id": record.image_id, "file_name": os.path.relpath(record.path.resolve(), root),
                       "width": record.width, "height": record.height})
        for box, label, crowd, difficult in zip(record.boxes.tolist(), record.labels.tolist(),
                                                record.iscrowd.tolist(), record.difficult.tolist()):
            x1, y1, x2, y2 = box
            ann = {"id": ann_id, "image_id": record.image_id, "category_id": data.category_ids[label],
                   "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                   "iscrowd": int(crowd or (difficult and ignore_difficult))}
            if difficult:
                ann["difficult"] = 1
            annotations.append(ann)
            ann_id += 1
    categories = [{"id": cid, "name": name, "supercategory": ""}
                  for cid, name in zip(data.category_ids, data.class_names)]
    return {"info": {"description": f"converted by detzoo from {data.source}"},
            "images": images, "annotations": annotations, "categories": categories}


def write_coco(data: DetectionData, out_path: Path) -> Path:
    """Write COCO JSON; ``file_name`` entries are relative to the returned image root."""
    root = common_image_root(data)
    coco = to_coco_dict(data, root, ignore_difficult=False)
    write_text(out_path, json.dumps(coco))
    return root


def write_txt(data: DetectionData, out_path: Path) -> Path:
    """Write the TXT format (x first, 1-based classes, 6 fields with iscrowd); returns the image root."""
    root = common_image_root(data)
    lines = []
    for record in data.records:
        objects = [",".join([*(f"{v:g}" for v in box), str(label + 1), str(int(crowd))])
                   for box, label, crowd in zip(record.boxes.tolist(), record.labels.tolist(),
                                                record.iscrowd.tolist())]
        relative = os.path.relpath(record.path.resolve(), root)
        if any(c.isspace() for c in relative):
            raise DataError(f"{record.path}: the TXT format separates fields with spaces, so it cannot hold this "
                            "path (rename the file, or convert to COCO JSON)")
        lines.append(" ".join([relative, *objects]))
    write_text(out_path, "\n".join(lines) + "\n")
    return root
