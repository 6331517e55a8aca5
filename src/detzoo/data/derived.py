"""Files a dataset builds from a published archive instead of downloading as they are: coco128's annotation
file is the part of COCO's official ``instances_train2017.json`` (in ``annotations_trainval2017.zip``) that
describes its 128 images. The result is checked by a SHA-256 of its *content* (``content_sha256``: the JSON
with every id-keyed list sorted by id and the keys sorted), which does not depend on how the JSON was
formatted or ordered, so the check holds for any faithful conversion.
"""

from __future__ import annotations

import hashlib
import json
from typing import IO, Any

from ..common.errors import DataError


def canonical_json(data: Any) -> bytes:
    """``data`` with each list of objects that all have an ``id`` sorted by it, keys sorted, no spaces."""
    def canonical(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: canonical(item) for key, item in value.items()}
        if isinstance(value, list):
            items = [canonical(item) for item in value]
            if items and all(isinstance(item, dict) and "id" in item for item in items):
                items.sort(key=lambda item: item["id"])
            return items
        return value

    return json.dumps(canonical(data), sort_keys=True, separators=(",", ":")).encode()


def content_sha256(data: Any) -> str:
    return hashlib.sha256(canonical_json(data)).hexdigest()


def coco_subset(source: dict, image_ids: list[int], where: str) -> dict:
    """The COCO object restricted to ``image_ids``: those images (by id) and their annotations (in the
    source's order); ``info``, ``licenses`` and every category kept. DataError when an id is missing."""
    wanted = set(image_ids)
    images = sorted((image for image in source.get("images", []) if image.get("id") in wanted),
                    key=lambda image: image["id"])
    missing = sorted(wanted - {image["id"] for image in images})
    if missing:
        raise DataError(f"{where}: no image(s) with id {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    annotations = [a for a in source.get("annotations", []) if a.get("image_id") in wanted]
    return {**source, "images": images, "annotations": annotations}  # the source's key order


def convert_member(kind: str, handle: IO[bytes], options: dict, where: str) -> bytes:
    """An archive member (an open binary file) turned into the dataset's file: ``kind`` names the conversion."""
    if kind == "coco_subset":
        try:
            source = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(source, dict):
            raise DataError(f"{where}: not a COCO object")
        return json.dumps(coco_subset(source, options["image_ids"], where)).encode()
    raise DataError(f"{where}: unknown conversion '{kind}'")
