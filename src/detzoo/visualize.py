"""Drawings people can read, the same on images, video frames and the service's web page.

The rules (``STYLE_RULES``, which the web page receives as data, so that its canvas follows them too):
- one colour per class: ``PALETTE[label % len(PALETTE)]``, 20 colours chosen to stay apart from each other;
- box lines and label text sized to the image: both scale with the mean side (``(width + height) / 2``), with a
  floor, so a label is as legible on a 4K frame as on a 320 px thumbnail;
- the label (``class 0.87``) in DejaVu Sans - the TrueType font matplotlib ships, so nothing is downloaded -
  on a filled rectangle of the class colour, in black or white, whichever contrasts more; above the box, or
  inside its top edge when the box touches the top of the image;
- higher scores drawn last, so their labels stay on top;
- tracked objects (``draw_tracking``): the colour is the track's (``PALETTE[track_id % len(PALETTE)]``, the same
  in every frame), the label starts with ``#id``, and a short trail of the track's recent centres follows the
  box; counting lines and zones are drawn in white on a dark edge, with their counts on a black label.

Drawing is Pillow's ``ImageDraw`` (torchvision's ``draw_bounding_boxes`` has no label backgrounds and its default
font is a tiny bitmap); only the placement arithmetic above is ours.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .common.files import atomic_write
from .common.structures import Detections

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075",
           "#ffe119", "#ffd8b1", "#a9a9a9", "#00a86b"]
LINE_WIDTH = {"fraction": 0.003, "min": 2}  # of the mean image side, in pixels
FONT_SIZE = {"fraction": 0.03, "min": 11}
STYLE_RULES = {"palette": PALETTE, "line_width": LINE_WIDTH, "font_size": FONT_SIZE, "font": "DejaVu Sans",
               "label": "{class_name} {score:.2f}", "track_label": "#{track_id} {class_name} {score:.2f}"}
OVERLAY = ("#ffffff", "#000000")  # counting lines and zones: the line, its edge (and the label background)
# Pillow's save options per format: good-looking, small files
SAVE_OPTIONS = {".jpg": {"quality": 90}, ".jpeg": {"quality": 90}, ".webp": {"quality": 90}}


@dataclass(frozen=True)
class DrawingStyle:
    line_width: int
    font_size: int
    padding: int  # around the label text, inside its background


def drawing_style(width: int, height: int) -> DrawingStyle:
    """Line width and font size for an image of this size (``STYLE_RULES``)."""
    side = (width + height) / 2
    line = max(LINE_WIDTH["min"], round(side * LINE_WIDTH["fraction"]))
    font = max(FONT_SIZE["min"], round(side * FONT_SIZE["fraction"]))
    return DrawingStyle(line, font, max(1, font // 6))


def class_color(label: int) -> str:
    return PALETTE[label % len(PALETTE)]


def text_color(background: str) -> str:
    """Black on light colours, white on dark ones (relative luminance, ITU-R BT.709 weights)."""
    red, green, blue = (int(background[i: i + 2], 16) for i in (1, 3, 5))
    return "#000000" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 140 else "#ffffff"


def label_text(class_name: str, score: float) -> str:
    return STYLE_RULES["label"].format(class_name=class_name, score=score)


def font_path() -> Path:
    """DejaVu Sans, the TrueType file matplotlib ships (the service sends the same file to its page)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


@functools.cache
def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path()), size)


def track_color(track_id: int) -> str:
    return PALETTE[track_id % len(PALETTE)]


def draw_on(image: Image.Image, det: Detections, scores: bool = True) -> Image.Image:
    """Draw ``det`` on ``image`` in place (an RGB Pillow image); returns it. ``scores=False`` labels boxes with
    the class name only (ground truth). Detections with track ids are coloured and labelled by track."""
    if len(det) == 0:
        return image
    style = drawing_style(*image.size)
    canvas = ImageDraw.Draw(image)
    text_font = font(style.font_size)
    order = torch.argsort(det.scores, stable=True).tolist()  # best last, so its label is on top
    boxes, values, labels = det.boxes.tolist(), det.scores.tolist(), det.labels.tolist()
    if det.track_ids is not None:
        tracks = det.track_ids.tolist()
        colors = [track_color(t) for t in tracks]
        texts = [STYLE_RULES["track_label"].format(track_id=t, class_name=det.class_names[label], score=score)
                 for t, label, score in zip(tracks, labels, values)]
    else:
        colors = [class_color(label) for label in labels]
        texts = [label_text(det.class_names[label], score) if scores else det.class_names[label]
                 for label, score in zip(labels, values)]
    for i in order:
        x1, y1, x2, y2 = boxes[i]
        canvas.rectangle((x1, y1, max(x1, x2), max(y1, y2)), outline=colors[i], width=style.line_width)
    for i in order:
        _draw_label(canvas, image.size, boxes[i], texts[i], colors[i], text_font, style)
    return image


def _draw_label(canvas: ImageDraw.ImageDraw, size: tuple[int, int], box: list[float], text: str, color: str,
                text_font: ImageFont.FreeTypeFont, style: DrawingStyle) -> None:
    left, top, right, bottom = canvas.textbbox((0, 0), text, font=text_font, anchor="lt")
    width, height = right - left + 2 * style.padding, bottom - top + 2 * style.padding
    x = min(max(0.0, box[0]), max(0.0, size[0] - width))  # keep the whole label inside the image
    y = box[1] - height if box[1] - height >= 0 else max(0.0, box[1])  # above the box, else inside its top
    y = min(y, max(0.0, size[1] - height))
    canvas.rectangle((x, y, x + width, y + height), fill=color)
    canvas.text((x + style.padding, y + style.padding), text, fill=text_color(color), font=text_font, anchor="lt")


def draw(image: torch.Tensor | np.ndarray, det: Detections, scores: bool = True) -> np.ndarray:
    """A uint8 RGB image ([3,H,W] tensor or [H,W,3] array) -> [H,W,3] with ``det`` drawn (a new array; the
    image itself when there is nothing to draw); ``scores=False`` for ground truth."""
    if isinstance(image, torch.Tensor):
        image = image.permute(1, 2, 0).numpy()
    if len(det) == 0:
        return image
    return np.asarray(draw_on(Image.fromarray(np.ascontiguousarray(image)), det, scores))


def draw_tracking(image: np.ndarray, det: Detections, trails: dict[int, np.ndarray],
                  overlays: list[tuple[np.ndarray, bool, str]]) -> np.ndarray:
    """A video frame [H,W,3] with its tracked detections, each track's trail (``trails``: id -> [K, 2] recent
    centres, oldest first) and the counting ``overlays`` (points [K, 2] in pixels, closed: a zone, else a line,
    and the label to show at its first point), under the boxes."""
    picture = Image.fromarray(np.ascontiguousarray(image))
    style = drawing_style(*picture.size)
    canvas = ImageDraw.Draw(picture)
    for points, closed, text in overlays:
        path = [tuple(p) for p in points.tolist()] + ([tuple(points[0].tolist())] if closed else [])
        canvas.line(path, fill=OVERLAY[1], width=style.line_width + 2, joint="curve")
        canvas.line(path, fill=OVERLAY[0], width=max(1, style.line_width - 1), joint="curve")
        x, y = points.mean(axis=0) if not closed else points[0]
        _draw_label(canvas, picture.size, [x, y, x, y], text, OVERLAY[1], font(style.font_size), style)
    for track, points in trails.items():
        if len(points) > 1:
            canvas.line([tuple(p) for p in points.tolist()], fill=track_color(track), width=style.line_width,
                        joint="curve")
    return np.asarray(draw_on(picture, det))


def save_drawn(image: torch.Tensor | np.ndarray, det: Detections, path: str | Path) -> Path:
    """``image`` with ``det`` drawn, written atomically to ``path`` (format from its suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    with atomic_write(path, "wb") as handle:
        Image.fromarray(draw(image, det)).save(handle, format=Image.registered_extensions()[suffix],
                                               **SAVE_OPTIONS.get(suffix, {}))
    return path
