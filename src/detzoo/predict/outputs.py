"""What ``detzoo predict`` writes.

Images, under ``--out`` (each image's path relative to the source folder is kept, so a recursive run mirrors
its folders):
- ``<name>.json`` per image (``Detections.to_dict``: the schema the service answers with too);
- the drawn image under the source's own file name and format (unless ``draw`` is off);
- ``labels/<name>.txt`` in YOLO format (``cls cx cy w h``, normalised, 0-based classes) and ``labels/classes.txt``
  (with ``save_txt``), ready for a labelling tool or ``data.train=`` (detzoo's YOLO reader);
- ``detections.json`` for the whole run: COCO results (what pycocotools ``loadRes`` reads), ``image_id`` being
  the one in each image's JSON (its position in the run), ``category_id`` the class index + 1.

``<name>`` is the file name without its suffix, unless another image of the same folder has that stem too (or
it would be ``detections`` or ``classes``), then with it: ``a.jpg`` and ``a.png`` give ``a.jpg.json`` and ``a.png.json``.

Videos: per-frame JSON Lines (the image schema plus ``frame`` and ``timestamp``), written under a temporary
name and renamed when closed, like every file detzoo writes.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from ..common.errors import ConfigError
from ..common.files import temp_path, write_json, write_text
from ..common.structures import Detections
from ..data.image_files import decode_rgb
from ..visualize import save_drawn

RUN_RESULTS = "detections.json"
LABELS = "labels"
CLASSES = "classes.txt"  # in labels/


def output_names(paths: list[Path], root: Path) -> dict[Path, Path]:
    """Each image -> its outputs' path relative to ``--out``, without a suffix (see the module docstring)."""
    relative = {path: _relative(path, root) for path in paths}
    stems = Counter((rel.parent, rel.stem.lower()) for rel in relative.values())
    reserved = {(Path("."), Path(RUN_RESULTS).stem), (Path("."), Path(CLASSES).stem)}
    return {path: rel.with_suffix("") if stems[(rel.parent, rel.stem.lower())] == 1
            and (rel.parent, rel.stem.lower()) not in reserved else rel
            for path, rel in relative.items()}


def _relative(path: Path, root: Path) -> Path:
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:  # not below the root (a glob with '..'): the file name alone
        return Path(path.name)


def yolo_lines(det: Detections, width: int, height: int) -> str:
    rows = []
    for (x1, y1, x2, y2), label in zip(det.boxes.tolist(), det.labels.tolist()):
        rows.append(f"{label} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                    f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return "".join(row + "\n" for row in rows)


class ImageOutputs:
    """``add(det, size)`` per image (``size``: (width, height), needed for YOLO labels), then ``close()`` for the
    run-wide files."""

    def __init__(self, out: Path, paths: list[Path], root: Path, class_names: list[str], draw: bool = True,
                 save_txt: bool = False):
        self.out, self.class_names, self.draw, self.save_txt = Path(out), class_names, draw, save_txt
        self.names = output_names(paths, root)
        if draw:
            for path, name in self.names.items():
                if (self.out / name.parent / path.name).resolve() == path.resolve():
                    raise ConfigError(f"--out {out}: the drawn image would replace {path}; choose another folder "
                                      "(or --no-draw)")
        self.coco: list[dict] = []
        self.images = self.detections = 0

    def add(self, det: Detections, size: tuple[int, int] | None = None) -> None:
        source = Path(det.path)
        name = self.out / self.names[source]
        write_json(det.to_dict(), name.parent / f"{name.name}.json")
        if self.draw:
            save_drawn(decode_rgb(source), det, name.parent / source.name)
        if self.save_txt:
            if size is None:
                raise ValueError("YOLO labels need the image size")
            write_text(self.out / LABELS / self.names[source].parent / f"{name.name}.txt", yolo_lines(det, *size))
        self.coco += det.to_coco(list(range(1, len(self.class_names) + 1)))
        self.images += 1
        self.detections += len(det)

    def close(self) -> list[Path]:
        """Write the run-wide files; returns them."""
        written = [write_json(self.coco, self.out / RUN_RESULTS)]
        if self.save_txt:
            written.append(write_text(self.out / LABELS / CLASSES, "".join(n + "\n" for n in self.class_names)))
        return written


class JsonLinesWriter:
    """One JSON object per line, written to a temporary file and renamed into place by ``close()``, so the file
    at ``path`` always holds complete lines only."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.temp = temp_path(self.path)
        self.handle = open(self.temp, "w")
        self.lines = 0

    def write(self, record: dict) -> None:
        self.handle.write(json.dumps(record) + "\n")
        self.lines += 1

    def close(self) -> Path:
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.temp, self.path)
        finally:
            self.temp.unlink(missing_ok=True)
        return self.path


def frame_record(det: Detections, index: int, timestamp: float) -> dict:
    """A video frame's JSON Lines record: the image schema plus the frame index and its time in seconds."""
    return {**det.to_dict(), "frame": index, "timestamp": round(timestamp, 6)}

