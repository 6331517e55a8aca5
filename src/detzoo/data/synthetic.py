"""A deterministic synthetic detection dataset for the demo and tests: coloured shapes (circle, square,
triangle, star) on cluttered backgrounds (gradients, noise, stripes and line clutter), written as JPEG
images plus COCO JSON for a train and a val split."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ["circle", "square", "triangle", "star"]
RADIUS = (0.1, 0.25)  # object radius range, as a fraction of the image side
VERSION = 4  # bump when the generator changes, so cached copies are regenerated


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Gradient + noise + clutter lines + a few faint blobs: enough texture that the model must look."""
    y, x = np.mgrid[0:size, 0:size] / size
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    angle = rng.uniform(0, 2 * math.pi)
    t = (np.cos(angle) * x + np.sin(angle) * y + 1) / 2
    pixels = c0 * (1 - t[..., None]) + c1 * t[..., None]
    if rng.random() < 0.5:  # stripes
        period = rng.uniform(8, 30)
        pixels += 25 * np.sin(2 * math.pi * (x if rng.random() < 0.5 else y) * size / period)[..., None]
    pixels += rng.normal(0, 12, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(4, 12)):
        points = [tuple(rng.uniform(0, size, 2)) for _ in range(2)]
        draw.line(points, fill=tuple(int(v) for v in rng.uniform(0, 255, 3)),
                  width=int(rng.integers(1, max(2, size // 80))))
    for _ in range(rng.integers(0, 4)):  # faint irregular blobs (not objects)
        cx, cy, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(5, 20)
        draw.ellipse([cx - r, cy - r * 0.5, cx + r, cy + r * 0.5],
                     fill=tuple(int(v) for v in rng.uniform(60, 200, 3)))
    return image


def _shape_points(kind: str, cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    if kind == "square":
        corners = 4
        return [(cx + r * math.cos(rotation + k * math.pi / 2 + math.pi / 4),
                 cy + r * math.sin(rotation + k * math.pi / 2 + math.pi / 4)) for k in range(corners)]
    if kind == "triangle":
        return [(cx + r * math.cos(rotation + k * 2 * math.pi / 3),
                 cy + r * math.sin(rotation + k * 2 * math.pi / 3)) for k in range(3)]
    # five-pointed star
    return [(cx + (r if k % 2 == 0 else 0.45 * r) * math.cos(rotation + k * math.pi / 5),
             cy + (r if k % 2 == 0 else 0.45 * r) * math.sin(rotation + k * math.pi / 5)) for k in range(10)]


def _draw_object(draw: ImageDraw.ImageDraw, rng: np.random.Generator, kind: str, cx: float, cy: float,
                 r: float) -> list[float]:
    colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
    outline = tuple(255 - v for v in colour)
    if kind == "circle":
        ry = r * rng.uniform(0.8, 1.0)
        draw.ellipse([cx - r, cy - ry, cx + r, cy + ry], fill=colour, outline=outline, width=2)
        return [cx - r, cy - ry, cx + r, cy + ry]
    points = _shape_points(kind, cx, cy, r, rng.uniform(0, 2 * math.pi))
    draw.polygon(points, fill=colour, outline=outline, width=2)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [min(xs), min(ys), max(xs), max(ys)]


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def make_image(rng: np.random.Generator, size: int, max_objects: int = 3) -> tuple[Image.Image, list]:
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    objects: list[tuple[list[float], int]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            r = rng.uniform(*RADIUS) * size
            cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
            kind = int(rng.integers(len(SHAPES)))
            rough = [cx - r, cy - r, cx + r, cy + r]
            if all(_iou(rough, box) < 0.15 for box, _ in objects):
                box = _draw_object(draw, rng, SHAPES[kind], cx, cy, r)
                box = [max(0.0, box[0]), max(0.0, box[1]), min(size, box[2]), min(size, box[3])]
                objects.append((box, kind))
                break
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return image, objects


def write_split(folder: Path, split: str, count: int, seed: int, size: int) -> Path:
    """Images under ``folder/<split>/`` and ``folder/annotations/instances_<split>.json``."""
    rng = np.random.default_rng(seed)
    (folder / split).mkdir(parents=True, exist_ok=True)
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        image, objects = make_image(rng, size)
        name = f"{split}_{i:05d}.jpg"
        image.save(folder / split / name, quality=92)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for box, kind in objects:
            x1, y1, x2, y2 = (round(v, 2) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": kind + 1,
                                "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                                "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0})
    categories = [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(SHAPES)]
    path = folder / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps({"info": {"description": f"detzoo synthetic shapes v{VERSION}"},
                                "images": images, "annotations": annotations, "categories": categories}))
    return path


def make_shapes_dataset(folder: str | Path, train: int = 400, val: int = 100, size: int = 256,
                        seed: int = 0) -> tuple[Path, Path]:
    """Generate (or reuse, if the same version and sizes are already there) the train and val splits."""
    folder = Path(folder)
    stamp = folder / "dataset.json"
    spec = {"version": VERSION, "train": train, "val": val, "size": size, "seed": seed}
    train_json = folder / "annotations" / "instances_train.json"
    val_json = folder / "annotations" / "instances_val.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == spec and train_json.is_file() and val_json.is_file():
        return train_json, val_json
    write_split(folder, "train", train, seed, size)
    write_split(folder, "val", val, seed + 1, size)
    stamp.write_text(json.dumps(spec))
    return train_json, val_json
