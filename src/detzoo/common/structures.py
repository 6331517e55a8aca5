"""Detections: the one result type used everywhere (boxes xyxy in original-image pixels), and the one
function that writes them as COCO-style JSON."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from .files import write_json


@dataclass
class Detections:
    boxes: torch.Tensor  # float [D, 4] xyxy, pixels of the original image
    scores: torch.Tensor  # float [D]
    labels: torch.Tensor  # int64 [D], 0..K-1
    class_names: list[str]
    image_id: int | None = None
    path: str | None = None
    track_ids: torch.Tensor | None = None  # int64 [D]: identities across video frames (``Predictor.track``)

    def __len__(self) -> int:
        return int(self.labels.numel())

    @classmethod
    def from_output(cls, output: dict, scale: tuple[float, float], class_names: list[str],
                    image_id: int | None = None, path: str | None = None) -> Detections:
        """Model output in input pixels -> Detections in original pixels; ``scale`` = (sx, sy)."""
        sx, sy = scale
        factor = torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
        return cls(output["boxes"].detach().float().cpu() * factor, output["scores"].detach().float().cpu(),
                   output["labels"].detach().long().cpu(), class_names, image_id, path)

    def filter(self, min_score: float) -> Detections:
        return self.select(self.scores >= min_score)

    def select(self, keep: torch.Tensor) -> Detections:
        """The detections picked by a boolean mask or an index tensor."""
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep], self.class_names,
                          self.image_id, self.path, None if self.track_ids is None else self.track_ids[keep])

    def to_coco(self, category_ids: list[int]) -> list[dict]:
        """COCO result entries: bbox [x, y, w, h], category_id, score."""
        out = []
        for (x1, y1, x2, y2), score, label in zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist()):
            out.append({"image_id": self.image_id, "category_id": category_ids[label],
                        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                        "score": round(score, 5)})
        return out

    def to_dict(self) -> dict:
        """``{"image", "image_id", "detections": [{"box", "score", "label", "class_name"[, "track_id"]}]}``."""
        entries = [{"box": [round(v, 2) for v in box], "score": round(score, 5), "label": label,
                    "class_name": self.class_names[label]}
                   for box, score, label in zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist())]
        if self.track_ids is not None:
            for entry, track in zip(entries, self.track_ids.tolist()):
                entry["track_id"] = track
        return {"image": self.path, "image_id": self.image_id, "detections": entries}


def write_coco_results(detections: Iterable[Detections], category_ids: list[int], path: Path) -> Path:
    """All detections as one COCO results list (what pycocotools ``loadRes`` reads)."""
    return write_json([entry for det in detections for entry in det.to_coco(category_ids)], path)
