"""The SSD paper's training augmentation as one decode-and-resize per image (hand-written: no library composes
these steps, and run one by one on the whole image they are what made the pipeline slow).

torchvision's ``transforms.v2`` pipeline runs every step on the whole image: photometric distortion, zoom-out
onto a canvas up to 4x the image's side (16x its pixels), the IoU-constrained crop, flip, resize, box clamping
and sanitising; on coco128 that is 31 images/s per core, most of it in colour conversions of full-size float
images and in painting and cropping the canvas. Here the random parameters of every step are drawn first, from
the image's size and boxes alone, with the same rules and ranges as those transforms (``Photometric.sample``,
``sample_zoom_out``, ``sample_iou_crop``: the SSD paper's crop - a crop whose IoU with some box whose centre it
contains is at least a threshold drawn from {0, .1, .3, .5, .7, .9, no crop}, 40 tries per threshold, sides
0.3-1 of the canvas, aspect 0.5-2). The geometric steps compose into one map (``Geometry``): the JPEG is decoded
at the smallest DCT scale the output needs (``scaled_read.read_image_at_least``), the part of the image the
crop shows is resized once (torch's uint8 bilinear with antialiasing, ``v2.Resize``'s kernel) into its place
on a canvas of the mean colour, the photometric distortion is applied to those uint8 pixels only (OpenCV
lookup tables, blends and 8-bit HSV), and the result is flipped. Boxes take exactly the pixels' map
(``PixelMap``), then the crop's rule (centre inside), clamping and ``SanitizeBoundingBoxes``' 1-pixel minimum.

Differences from the step-by-step pipeline, none of which changes the distribution of what it produces: the
photometric distortion runs after resizing (it is per pixel, and torchvision's order leaves the canvas fill
undistorted, as this one does; the contrast step blends towards the grey mean of the whole image, measured on
every 4th pixel); OpenCV rounds where torchvision truncates and keeps HSV in 8 bits (tests/test_augment.py: the
same colours within 2 levels on average); the image's edges on the canvas and the crop's edges in the decoded
image are rounded to whole pixels (< 1 output pixel). Randomness comes from a ``numpy`` generator seeded with
the sample's seed (``TrainBatchSampler``), so a sample is augmented the same way in any worker, after a resume
and on any number of processes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from ..common.config import AugmentConfig
from .records import ImageRecord
from .scaled_read import read_image_at_least

if TYPE_CHECKING:
    from .transforms import Preprocess

IOU_THRESHOLDS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)  # 1.0: leave the image uncropped
CROP_TRIALS = 40
CROP_SCALE = (0.3, 1.0)
CROP_ASPECT = (0.5, 2.0)
BRIGHTNESS, CONTRAST, SATURATION, HUE = (0.875, 1.125), (0.5, 1.5), (0.5, 1.5), (-0.05, 0.05)
MIN_BOX_SIDE = 1.0  # output pixels, as SanitizeBoundingBoxes(min_size=1)


def _lut(factor: float, offset: float) -> np.ndarray:
    """uint8 -> factor * v + offset, clipped to 0..255 and truncated, as torchvision's uint8 blends do."""
    return np.clip(np.arange(256) * factor + offset, 0, 255).astype(np.uint8)


def _grey_mean(pixels: np.ndarray) -> float:
    """Mean grey level of uint8 [N, 1, 3] pixels (torchvision's contrast reference; OpenCV's luma weights)."""
    return float(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY).mean())


# what travels with each box, and goes when its box goes (the ignore regions included)
PER_BOX = ("labels", "iscrowd", "difficult")


@dataclass(frozen=True)
class Photometric:
    """``RandomPhotometricDistort``: each factor present with probability p, contrast before or after the
    saturation and hue steps, a channel permutation with probability p."""

    brightness: float | None
    contrast: float | None
    saturation: float | None
    hue: float | None
    contrast_before: bool
    permutation: tuple[int, int, int] | None

    @classmethod
    def sample(cls, p: float, rng: np.random.Generator) -> Photometric:
        def maybe(bounds: tuple[float, float]) -> float | None:
            return float(rng.uniform(*bounds)) if rng.random() < p else None

        factors = [maybe(bounds) for bounds in (BRIGHTNESS, CONTRAST, SATURATION, HUE)]
        contrast_before = bool(rng.random() < 0.5)
        permutation = tuple(int(i) for i in rng.permutation(3)) if rng.random() < p else None
        return cls(*factors, contrast_before, permutation)

    @property
    def channel_order(self) -> list[int]:
        return list(self.permutation) if self.permutation is not None else [0, 1, 2]

    def _colour(self, pixels: np.ndarray) -> np.ndarray:
        """Saturation (a blend with each pixel's grey) then hue (a shift on OpenCV's 8-bit HSV circle)."""
        if self.saturation is not None:
            grey = cv2.cvtColor(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
            pixels = cv2.addWeighted(pixels, self.saturation, grey, 1 - self.saturation, 0)
        if self.hue is not None:
            hsv = cv2.cvtColor(pixels, cv2.COLOR_RGB2HSV_FULL)
            hsv[..., 0] = ((np.arange(256) + round(self.hue * 256)) % 256).astype(np.uint8)[hsv[..., 0]]
            pixels = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
        return pixels

    def apply(self, pixels: np.ndarray, whole_image: Callable[[], np.ndarray]) -> np.ndarray:
        """uint8 [H, W, 3] pixels distorted, clipped to 0..255 after each step as torchvision's steps are:
        brightness and an earlier contrast as one lookup table, saturation, hue, a later contrast (the channel
        permutation, last, is ``channel_order``). ``whole_image()`` gives uint8 [N, 1, 3] pixels of the whole
        image, whose grey mean at that point the contrast blends towards; called only for a contrast step."""
        sample = whole_image() if self.contrast is not None else None
        lut = np.arange(256, dtype=np.uint8)
        if self.brightness is not None:
            lut = _lut(self.brightness, 0.0)[lut]
        if self.contrast is not None and self.contrast_before:
            lut = _lut(self.contrast, (1 - self.contrast) * _grey_mean(cv2.LUT(sample, lut)))[lut]
        if self.brightness is not None or (self.contrast is not None and self.contrast_before):
            pixels = cv2.LUT(pixels, lut)
        pixels = self._colour(pixels)
        if self.contrast is not None and not self.contrast_before:
            before = self._colour(cv2.LUT(sample, lut))
            pixels = cv2.LUT(pixels, _lut(self.contrast, (1 - self.contrast) * _grey_mean(before)))
        return pixels

    def apply_tensor(self, image: torch.Tensor) -> torch.Tensor:
        """The same distortion on a uint8 [3, H, W] tensor on any device, channel permutation included:
        torchvision's functional steps in ``RandomPhotometricDistort``'s order (what ``apply`` reproduces with
        OpenCV on the CPU), for images decoded on the GPU (``device_decode``). Run on the whole image, as
        torchvision's pipeline runs it, so the contrast blends towards the whole image's grey mean."""
        from torchvision.transforms.v2 import functional as F

        if self.brightness is not None:
            image = F.adjust_brightness(image, self.brightness)
        if self.contrast is not None and self.contrast_before:
            image = F.adjust_contrast(image, self.contrast)
        if self.saturation is not None:
            image = F.adjust_saturation(image, self.saturation)
        if self.hue is not None:
            image = F.adjust_hue(image, self.hue)
        if self.contrast is not None and not self.contrast_before:
            image = F.adjust_contrast(image, self.contrast)
        return image[self.channel_order] if self.permutation is not None else image


def sample_zoom_out(width: int, height: int, max_ratio: float, rng: np.random.Generator
                    ) -> tuple[int, int, int, int]:
    """``RandomZoomOut``: (canvas width, canvas height, left, top) of the image on a canvas r x its size,
    r uniform in [1, max_ratio]."""
    ratio = 1.0 + rng.random() * (max_ratio - 1.0)
    canvas_w, canvas_h = int(width * ratio), int(height * ratio)
    left, top = int((canvas_w - width) * rng.random()), int((canvas_h - height) * rng.random())
    return canvas_w, canvas_h, left, top


def sample_iou_crop(width: int, height: int, boxes: np.ndarray, rng: np.random.Generator
                    ) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """``RandomIoUCrop`` on a width x height canvas with ``boxes`` (xyxy, canvas pixels): ((x0, y0, x1, y1),
    which boxes have their centre inside), or None for "no crop" (also for an image without boxes). The 40
    trials of a threshold are drawn and checked at once; the first that passes is taken, as in the loop."""
    if len(boxes) == 0:
        return None
    centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while True:
        threshold = IOU_THRESHOLDS[int(rng.integers(len(IOU_THRESHOLDS)))]
        if threshold >= 1.0:
            return None
        scales = CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * rng.random((CROP_TRIALS, 2))
        crop_w, crop_h = (width * scales[:, 0]).astype(np.int64), (height * scales[:, 1]).astype(np.int64)
        shifts = rng.random((CROP_TRIALS, 2))
        left, top = ((width - crop_w) * shifts[:, 0]).astype(np.int64), ((height - crop_h) * shifts[:, 1]).astype(np.int64)
        right, bottom = left + crop_w, top + crop_h
        aspect = crop_w / np.maximum(crop_h, 1)
        shaped = (crop_w > 0) & (crop_h > 0) & (CROP_ASPECT[0] <= aspect) & (aspect <= CROP_ASPECT[1])
        inside = ((left[:, None] < centre_x) & (centre_x < right[:, None])
                  & (top[:, None] < centre_y) & (centre_y < bottom[:, None]))  # [trials, boxes]
        inter = (np.clip(np.minimum(boxes[:, 2], right[:, None]) - np.maximum(boxes[:, 0], left[:, None]), 0, None)
                 * np.clip(np.minimum(boxes[:, 3], bottom[:, None]) - np.maximum(boxes[:, 1], top[:, None]), 0, None))
        iou = inter / (box_area + (crop_w * crop_h)[:, None] - inter)
        passed = shaped & (np.where(inside, iou, -1.0).max(axis=1) >= threshold)
        if passed.any():
            k = int(passed.argmax())
            return (int(left[k]), int(top[k]), int(right[k]), int(bottom[k])), inside[k]


@dataclass(frozen=True)
class Geometry:
    """Zoom-out, crop, resize and flip as drawn: the image (``image_size`` = width, height) lies at ``offset``
    on a canvas, ``crop`` (x0, y0, x1, y1; whole canvas pixels) of the canvas is resized to ``output``
    (height, width), then flipped left-right when ``flip``."""

    image_size: tuple[int, int]
    offset: tuple[int, int]
    crop: tuple[int, int, int, int]
    output: tuple[int, int]
    flip: bool

    @property
    def scale(self) -> tuple[float, float]:
        """Output pixels per canvas pixel (x, y)."""
        x0, y0, x1, y1 = self.crop
        return self.output[1] / (x1 - x0), self.output[0] / (y1 - y0)

    def pixel_map(self, reduction: int, decoded_size: tuple[int, int]) -> PixelMap | None:
        """The map the pixels take from an image decoded at 1/``reduction`` of its size (``decoded_size`` =
        width, height): the decoded pixels of the part of the image the crop shows, rounded outward to whole
        decoded pixels, onto the output pixels they cover, rounded to whole pixels (each rounding < 1 output
        pixel). None when less than one output pixel of the image shows."""
        scale_x, scale_y = self.scale
        left, top = self.offset
        x0, y0, x1, y1 = self.crop
        width, height = self.image_size
        shown = (max(left, x0), max(top, y0), min(left + width, x1), min(top + height, y1))  # canvas pixels
        dest = (round((shown[0] - x0) * scale_x), round((shown[1] - y0) * scale_y),
                round((shown[2] - x0) * scale_x), round((shown[3] - y0) * scale_y))
        source = ((shown[0] - left) // reduction, (shown[1] - top) // reduction,
                  min(decoded_size[0], -(-(shown[2] - left) // reduction)),
                  min(decoded_size[1], -(-(shown[3] - top) // reduction)))
        if dest[2] <= dest[0] or dest[3] <= dest[1] or source[2] <= source[0] or source[3] <= source[1]:
            return None
        return PixelMap(source, reduction, dest, self.output, self.flip)


@dataclass(frozen=True)
class PixelMap:
    """What the pixels actually do: decoded pixels ``source`` (x0, y0, x1, y1) of an image decoded at
    1/``reduction`` are resized onto output pixels ``dest`` of an ``output`` (height, width) canvas, which is
    then flipped left-right when ``flip``. Boxes take exactly this map, so they stay on their pixels."""

    source: tuple[int, int, int, int]
    reduction: int
    dest: tuple[int, int, int, int]
    output: tuple[int, int]
    flip: bool

    def map_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """xyxy in original image pixels -> xyxy in output pixels, clamped to the output (flip applied)."""
        (sx0, sy0, sx1, sy1), (dx0, dy0, dx1, dy1) = self.source, self.dest
        scale = np.array([(dx1 - dx0) / (sx1 - sx0), (dy1 - dy0) / (sy1 - sy0)] * 2) / self.reduction
        out = (boxes - np.array([sx0, sy0, sx0, sy0]) * self.reduction) * scale + np.array([dx0, dy0, dx0, dy0])
        height, width = self.output
        out = np.clip(out, 0, np.array([width, height, width, height])).astype(np.float32)
        if self.flip:
            out = np.stack([width - out[:, 2], out[:, 1], width - out[:, 0], out[:, 3]], axis=1)
        return out


@dataclass(frozen=True)
class Draw:
    """The random choices for one sample."""

    geometry: Geometry
    inside: np.ndarray | None  # the crop's rule: boxes whose centre lies inside (None: no crop, all kept)
    photometric: Photometric | None


class TrainAugment:
    """Decoding + augmentation of one training sample (see the module docstring). Called by
    ``DetectionDataset`` with the record, its target and the sample's seed; ``from_pixels`` augments an
    image already in memory."""

    reads_images = True  # DetectionDataset hands it the record instead of decoded pixels

    def __init__(self, preprocess: Preprocess, augment: AugmentConfig):
        self.preprocess = preprocess
        self.augment = augment
        cv2.setNumThreads(1)  # one sample at a time per DataLoader worker: more threads only oversubscribe
        self.fill = [round(255 * m) for m in preprocess.mean]

    def sample(self, width: int, height: int, boxes: np.ndarray, rng: np.random.Generator) -> Draw:
        aug = self.augment
        photometric = Photometric.sample(aug.photometric, rng) if aug.photometric > 0 else None
        canvas_w, canvas_h, left, top = width, height, 0, 0
        if aug.zoom_out > 0 and aug.zoom_out_max > 1 and rng.random() < aug.zoom_out:
            canvas_w, canvas_h, left, top = sample_zoom_out(width, height, aug.zoom_out_max, rng)
        crop, inside = (0, 0, canvas_w, canvas_h), None
        if aug.iou_crop:
            found = sample_iou_crop(canvas_w, canvas_h, boxes + np.array([left, top, left, top]), rng)
            if found is not None:
                crop, inside = found
        flip = aug.flip > 0 and rng.random() < aug.flip
        output = self.preprocess.output_size(crop[3] - crop[1], crop[2] - crop[0])
        return Draw(Geometry((width, height), (left, top), crop, tuple(output), flip), inside, photometric)

    def render(self, pixels: torch.Tensor, pixel_map: PixelMap | None, draw: Draw) -> torch.Tensor:
        """The output, uint8 [3, H, W], from the decoded pixels (uint8 [H, W, 3])."""
        height, width = draw.geometry.output
        canvas = None
        if pixel_map is not None:
            (sx0, sy0, sx1, sy1), (dx0, dy0, dx1, dy1) = pixel_map.source, pixel_map.dest
            region = pixels[sy0:sy1, sx0:sx1].permute(2, 0, 1).unsqueeze(0)  # NHWC memory: torch's uint8 fast path
            patch = torch.nn.functional.interpolate(region, size=(dy1 - dy0, dx1 - dx0), mode="bilinear",
                                                    antialias=True)[0].permute(1, 2, 0)
            order = [0, 1, 2]
            if draw.photometric is not None:
                patch = torch.from_numpy(draw.photometric.apply(patch.numpy(), lambda: every_fourth_pixel(pixels)))
                order = draw.photometric.channel_order  # applied with the copy to [3, H, W] below
            if (dx0, dy0, dx1, dy1) == (0, 0, width, height):
                canvas = patch.permute(2, 0, 1)[order].contiguous()
        if canvas is None:
            canvas = torch.empty(3, height, width, dtype=torch.uint8)
            for channel, value in enumerate(self.fill):
                canvas[channel].fill_(value)
            if pixel_map is not None:
                canvas[:, dy0:dy1, dx0:dx1] = patch.permute(2, 0, 1)[order]
        return canvas.flip(2) if draw.geometry.flip else canvas

    def targets(self, target: dict, draw: Draw, pixel_map: PixelMap | None) -> dict:
        """Boxes through the pixels' map; dropped when the crop's rule drops them or when under 1 output pixel."""
        boxes = target["boxes"].numpy().reshape(-1, 4)
        # no pixel of the image shows: no box does (zero-sized boxes are dropped below)
        mapped = pixel_map.map_boxes(boxes) if pixel_map is not None else np.zeros_like(boxes)
        sides = mapped[:, 2:] - mapped[:, :2]
        keep = (sides >= MIN_BOX_SIDE).all(axis=1) & (sides[:, 0] * sides[:, 1] >= MIN_BOX_SIDE ** 2)
        if draw.inside is not None:
            keep &= draw.inside
        index = torch.from_numpy(np.flatnonzero(keep))
        return {"boxes": torch.from_numpy(mapped[keep]),
                **{key: target[key][index] for key in PER_BOX if key in target}}

    def _augment(self, pixels: torch.Tensor, reduction: int, target: dict, draw: Draw) -> tuple[torch.Tensor, dict]:
        pixel_map = draw.geometry.pixel_map(reduction, (pixels.shape[1], pixels.shape[0]))
        return self.render(pixels, pixel_map, draw), self.targets(target, draw, pixel_map)

    @staticmethod
    def _rng(seed: int | None) -> np.random.Generator:
        # without a sampler seed, torch's global generator decides (as torch.manual_seed users expect)
        return np.random.default_rng(seed if seed is not None else int(torch.randint(2**62, (1,))))

    def __call__(self, record: ImageRecord, target: dict, seed: int | None) -> tuple[torch.Tensor, dict]:
        draw = self.sample(record.width, record.height, target["boxes"].numpy().reshape(-1, 4), self._rng(seed))
        scale_x, scale_y = draw.geometry.scale
        image, reduction = read_image_at_least(record, math.ceil(record.width * scale_x),
                                               math.ceil(record.height * scale_y))
        with warnings.catch_warnings():  # Pillow's array interface is read-only; the pixels are only read
            warnings.simplefilter("ignore", UserWarning)
            pixels = torch.from_numpy(np.asarray(image))
        return self._augment(pixels, reduction, target, draw)

    def from_pixels(self, image: torch.Tensor, target: dict, seed: int | None) -> tuple[torch.Tensor, dict]:
        """The same augmentation of a decoded uint8 [3, H, W] image."""
        height, width = image.shape[-2:]
        draw = self.sample(width, height, target["boxes"].numpy().reshape(-1, 4), self._rng(seed))
        return self._augment(image.permute(1, 2, 0), 1, target, draw)


def every_fourth_pixel(pixels: torch.Tensor) -> np.ndarray:
    """uint8 [N, 1, 3]: every 4th pixel of every 4th row of uint8 [H, W, 3] pixels (their grey mean is the
    image's to a fraction of a level)."""
    height, width = pixels.shape[:2]
    array = np.ascontiguousarray(pixels.numpy())  # a view unless the pixels are in [3, H, W] memory
    return cv2.resize(array, (max(1, width // 4), max(1, height // 4)), interpolation=cv2.INTER_NEAREST).reshape(-1, 1, 3)
