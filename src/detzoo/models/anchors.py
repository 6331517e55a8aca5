"""Default boxes (anchors) for single-stage detectors, as one [A, 4] xyxy tensor in input pixels.

Every zoo layout reduces to: per feature level, a grid of centres and a list of (width, height) sizes; the
anchors of a level run location by location (row-major), all sizes of one location together - the order in
which heads flatten their outputs. torchvision's ``DefaultBoxGenerator`` and ``AnchorGenerator`` work on
ImageLists and images at run time; SSD anchors are a fixed buffer, so they are computed here once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class AnchorSpec:
    """Per level: (width, height) sizes as fractions of the input size, and optional centre steps in
    pixels (default: the real feature stride, input size / map size)."""

    sizes: list[list[tuple[float, float]]]
    steps: list[float] | None = None
    clip: bool = False  # clip anchors to the image (torchvision's DefaultBoxGenerator does; the recipes do not)

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
            wh = torch.tensor(sizes, dtype=torch.float64) * torch.tensor([image_w, image_h], dtype=torch.float64)
            centres = torch.stack((cx, cy), dim=-1).reshape(-1, 1, 2)
            half = (wh / 2).reshape(1, -1, 2)
            boxes = torch.cat((centres - half, centres + half), dim=-1).reshape(-1, 4)
            if self.clip:
                boxes = torch.stack((boxes[:, 0].clamp(0, image_w), boxes[:, 1].clamp(0, image_h),
                                     boxes[:, 2].clamp(0, image_w), boxes[:, 3].clamp(0, image_h)), dim=-1)
            levels.append(boxes)
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
