"""Centre-size box coding with weights (10, 10, 5, 5) = SSD's variances (0.1, 0.2).

The formula is torchvision's ``BoxCoder``; it is written here (a few lines) because that class is private
and decodes only flat [A, 4] inputs, while export and post-processing decode [N, A, 4] against shared anchors.
"""

from __future__ import annotations

import math

import torch

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
# the largest log-scale a decoded box may take (as in torchvision), so exp() cannot overflow
MAX_LOG_SCALE = math.log(1000.0 / 16)


class BoxCoder:
    def __init__(self, weights: tuple[float, float, float, float] = BOX_WEIGHTS):
        self.weights = weights

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """xyxy boxes and anchors of the same shape [..., 4] -> regression targets [..., 4]."""
        wx, wy, ww, wh = self.weights
        aw = anchors[..., 2] - anchors[..., 0]
        ah = anchors[..., 3] - anchors[..., 1]
        ax = anchors[..., 0] + 0.5 * aw
        ay = anchors[..., 1] + 0.5 * ah
        bw = boxes[..., 2] - boxes[..., 0]
        bh = boxes[..., 3] - boxes[..., 1]
        bx = boxes[..., 0] + 0.5 * bw
        by = boxes[..., 1] + 0.5 * bh
        return torch.stack((wx * (bx - ax) / aw, wy * (by - ay) / ah,
                            ww * torch.log(bw / aw), wh * torch.log(bh / ah)), dim=-1)

    def decode(self, codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Regression [..., A, 4] against anchors [A, 4] (broadcast) -> xyxy boxes [..., A, 4]."""
        wx, wy, ww, wh = self.weights
        anchors = anchors.to(codes.dtype)
        aw = anchors[..., 2] - anchors[..., 0]
        ah = anchors[..., 3] - anchors[..., 1]
        ax = anchors[..., 0] + 0.5 * aw
        ay = anchors[..., 1] + 0.5 * ah
        cx = codes[..., 0] / wx * aw + ax
        cy = codes[..., 1] / wy * ah + ay
        w = torch.exp(torch.clamp(codes[..., 2] / ww, max=MAX_LOG_SCALE)) * aw
        h = torch.exp(torch.clamp(codes[..., 3] / wh, max=MAX_LOG_SCALE)) * ah
        return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)
