"""One pass over the image files: each file is hashed (exact duplicates, ``data.image_files.file_digest``) and
decoded once by the readers' own ``decode_image`` (so a truncated or undecodable file, or one whose size differs
from its annotation, is named with the message training would stop with, and a truncated JPEG that rule repairs
is listed as repaired). Files are handled by a thread pool: Pillow decodes without holding the GIL.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from ..data.image_files import decode_image, file_digest
from ..data.records import DataError, DetectionData, ImageRecord


@dataclass
class ImageCheck:
    problems: list[str] = field(default_factory=list)  # one message per unreadable image
    repairs: list[str] = field(default_factory=list)  # one message per repaired image (a truncated JPEG)
    duplicates: list[list[str]] = field(default_factory=list)  # groups of annotations whose files are identical
    samples: dict[int, torch.Tensor] = field(default_factory=dict)  # record index -> decoded uint8 [3,H,W]


def _check_one(record: ImageRecord, keep: bool) -> tuple[str | None, str | None, str | None, torch.Tensor | None]:
    """-> (content hash, problem message, repair message, the decoded image when ``keep``)."""
    try:
        digest = file_digest(record.path)
    except OSError as exc:
        return None, f"{record.path}: cannot read the file ({exc}), listed in {record.origin}", None, None
    try:
        decoded = decode_image(record.path, origin=record.origin, size=(record.width, record.height))
    except DataError as exc:
        return digest, str(exc), None, None
    return digest, None, decoded.repair, decoded.pixels if keep else None


def _name(record: ImageRecord) -> str:
    """The image and where it is listed ("a.jpg (a.xml)"; COCO's origin already holds the file name)."""
    return record.origin if record.path.name in record.origin else f"{record.path} ({record.origin})"


def check_images(data: DetectionData, keep: set[int] = frozenset(), workers: int = 4) -> ImageCheck:
    """Read, hash and decode every image of ``data``; keep the decoded images of the ``keep`` indices."""
    result = ImageCheck()
    by_hash: dict[str, list[str]] = defaultdict(list)
    records = data.records
    with ThreadPoolExecutor(max(1, workers)) as pool:
        outcomes = pool.map(lambda i: _check_one(records[i], i in keep), range(len(records)))
        for index, (digest, problem, repair, image) in enumerate(tqdm(outcomes, total=len(records), desc="images",
                                                              unit="img", disable=None, leave=False)):
            if digest is not None:
                by_hash[digest].append(_name(records[index]))
            if problem is not None:
                result.problems.append(problem)
            if repair is not None:
                result.repairs.append(repair)
            if image is not None:
                result.samples[index] = image
    result.duplicates = [names for names in by_hash.values() if len(names) > 1]
    return result
