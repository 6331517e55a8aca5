"""Draw detections on their image (torchvision ``draw_bounding_boxes``) and write image + JSON."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes

from .common.files import write_json
from .common.structures import Detections
from .data.loader import decode_rgb

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075"]


def draw(image: torch.Tensor, det: Detections) -> torch.Tensor:
    """uint8 [3,H,W] with labelled boxes drawn."""
    if len(det) == 0:
        return image
    labels = [f"{det.class_names[label]} {score:.2f}" for label, score in zip(det.labels.tolist(),
                                                                                det.scores.tolist())]
    colors = [PALETTE[label % len(PALETTE)] for label in det.labels.tolist()]
    width = max(2, round(max(image.shape[-2:]) / 300))
    return draw_bounding_boxes(image, det.boxes, labels=labels, colors=colors, width=width)


def save_prediction(det: Detections, out_dir: Path) -> tuple[Path, Path]:
    """``<out>/<name>.json`` and ``<out>/<name>.jpg`` (or .png) with boxes drawn."""
    out_dir.mkdir(parents=True, exist_ok=True)
    source = Path(det.path)
    drawn = draw(decode_rgb(source), det)
    json_path = write_json(det.to_dict(), out_dir / f"{source.stem}.json")
    image_path = out_dir / (f"{source.stem}.png" if source.suffix.lower() == ".png" else f"{source.stem}.jpg")
    Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(image_path, quality=90)
    return json_path, image_path
