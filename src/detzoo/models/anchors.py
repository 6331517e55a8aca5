"""Default boxes (anchors) for single-stage detectors, as one [A, 4] xyxy tensor in input pixels.

Every zoo layout reduces to: per feature level, a grid of centres and a list of (width, height) sizes; the
anchors of a level run location by location (row-major), all sizes of one location together - the order in
which heads flatten their outputs. torchvision's ``DefaultBoxGenerator`` and ``AnchorGenerator`` work on
ImageLists and images at run time; SSD anchors are a fixed buffer, so they are computed here once.

Clipping happens in centre form, as the two codebases whose boxes we reproduce do it: ``"size"`` limits width
and height to the image (torchvision's ``DefaultBoxGenerator(clip=True)``, used by ``ssd_vgg16``);
``"centre_size"`` also pulls centres into the image (pytorch-ssd's ``generate_ssd_priors``, used by
``ssdlite_mobilenetv2``); ``"none"`` is the MindSpore recipes' rule (the other SSD models).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CLIP_MODES = ("none", "size", "centre_size")


@dataclass
class AnchorSpec:
    """Per level: (width, height) sizes as fractions of the input size, and optional centre steps in
    pixels (default: the real feature stride, input size / map size)."""

    sizes: list[list[tuple[float, float]]]
    steps: list[float] | None = None
    clip: str = "none"  # "none" | "size" | "centre_size" (see the module docstring)

    def __post_init__(self) -> None:
        if self.clip not in CLIP_MODES:
            raise ValueError(f"anchor clip mode '{self.clip}' is not one of {CLIP_MODES}")

    def num_anchors_per_location(self) -> list[int]:
        return [len(s) for s in self.sizes]

    def make(self, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int]) -> torch.Tensor:
        if len(feature_sizes) != len(self.sizes):
            raise ValueError(f"{len(feature_sizes)} feature maps but anchors for {len(self.sizes)} levels")
        image_h, image_w = image_size
        levels = []
        for k, ((fh, fw), sizes) in enumerate(zip(feature_sizes, self.sizes)):
            step_y = self.steps[k] if self.steps else image_h / fh
            step_x = self.steps[k] if self.steps else image_w / fw
            cy, cx = torch.meshgrid((torch.arange(fh, dtype=torch.float64) + 0.5) * step_y,
                                    (torch.arange(fw, dtype=torch.float64) + 0.5) * step_x, indexing="ij")
            image_wh = torch.tensor([image_w, image_h], dtype=torch.float64)
            wh = torch.tensor(sizes, dtype=torch.float64) * image_wh
            centres = torch.stack((cx, cy), dim=-1).reshape(-1, 1, 2)
            if self.clip != "none":
                wh = torch.minimum(wh, image_wh)
            if self.clip == "centre_size":
                centres = torch.minimum(centres, image_wh)
            half = (wh / 2).reshape(1, -1, 2)
            levels.append(torch.cat((centres - half, centres + half), dim=-1).reshape(-1, 4))
        return torch.cat(levels).float()


def ssd_scale_sizes(scales: list[float], aspect_ratios: list[list[float]],
                    first_level: list[tuple[float, float]] | None = None) -> list[list[tuple[float, float]]]:
    """The SSD paper's sizes. ``scales`` has one more entry than there are levels (the last one only
    serves the geometric mean). Per level k: s_k square, sqrt(s_k s_k+1) square, then for each ratio r
    the pair (s_k sqrt r, s_k / sqrt r), (s_k / sqrt r, s_k sqrt r). ``first_level`` replaces level 0."""
    sizes = []
    for k, ratios in enumerate(aspect_ratios):
        s, s_next = scales[k], scales[k + 1]
        level = [(s, s), (math.sqrt(s * s_next),) * 2]
        for r in ratios:
            level += [(s * math.sqrt(r), s / math.sqrt(r)), (s / math.sqrt(r), s * math.sqrt(r))]
        sizes.append(level)
    if first_level is not None:
        sizes[0] = first_level
    return sizes


def linear_scales(min_scale: float, max_scale: float, levels: int, last: float = 1.0) -> list[float]:
    """min..max evenly over the levels, plus ``last`` for the final geometric mean."""
    return [min_scale + (max_scale - min_scale) * k / (levels - 1) for k in range(levels)] + [last]


def ssd300_mobilenetv2_anchors() -> AnchorSpec:
    """recipes.md section 2: scales 0.2..0.95; level 0 = 0.1 square + s_0 with ratios 2 and 1/2 (3 boxes);
    levels 1-5 = 6 boxes each. 1917 anchors at 300 px."""
    scales = linear_scales(0.2, 0.95, 6)
    s0 = scales[0]
    first = [(0.1, 0.1), (s0 * math.sqrt(2), s0 / math.sqrt(2)), (s0 / math.sqrt(2), s0 * math.sqrt(2))]
    return AnchorSpec(ssd_scale_sizes(scales, [[2, 3]] * 6, first_level=first))


def ssd_vgg16_anchors() -> AnchorSpec:
    """recipes.md section 5, the SSD paper's boxes as torchvision's ``ssd300_vgg16`` makes them: scales
    0.07 .. 1.05, ratios 2 (levels 0, 4, 5) or 2 and 3, steps 8 .. 300 px, sizes clipped to the image.
    4, 6, 6, 6, 4, 4 boxes per location: 8732 at 300 px."""
    return AnchorSpec(ssd_scale_sizes([0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
                                      [[2], [2, 3], [2, 3], [2, 3], [2], [2]]),
                      steps=[8, 16, 32, 64, 100, 300], clip="size")


def ssdlite_mobilenetv2_anchors() -> AnchorSpec:
    """recipes.md section 6, pytorch-ssd's priors for 300 px: box sizes (60, 105) .. (285, 330) px, ratios
    2 and 3 (6 per location), steps 16, 32, 64, 100, 150, 300 px, centres and sizes clamped to the image.
    3000 priors."""
    bounds = [60, 105, 150, 195, 240, 285, 330]
    return AnchorSpec(ssd_scale_sizes([b / 300 for b in bounds], [[2, 3]] * 6),
                      steps=[16, 32, 64, 100, 150, 300], clip="centre_size")


def multiscale_anchors(input_size: int, strides: tuple[int, ...] = (8, 16, 32, 64, 128), anchor_scale: float = 4.0,
                       scales_per_octave: int = 2, aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5)) -> AnchorSpec:
    """recipes.md sections 3-4 (TF's multiscale grid anchors): per level a base size of ``anchor_scale``
    x stride, ``scales_per_octave`` scales 2^(i / scales_per_octave), and each aspect ratio r = width /
    height. 6 per location; 51150 anchors at 640 px. Centres follow the real feature stride."""
    sizes = []
    for stride in strides:
        level = []
        for octave in range(scales_per_octave):
            base = anchor_scale * stride * 2 ** (octave / scales_per_octave) / input_size
            level += [(base * math.sqrt(r), base / math.sqrt(r)) for r in aspect_ratios]
        sizes.append(level)
    return AnchorSpec(sizes)
