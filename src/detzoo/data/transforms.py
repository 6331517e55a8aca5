"""Image pre-processing shared by training, evaluation, the Predictor and export checks.

A model describes its input with :class:`Preprocess` (size, resize mode, mean/std). The data pipeline resizes
and keeps images as uint8 (4x less to move between processes); :func:`normalize` turns a uint8 batch into
the model's float input on the device. The SSD training augmentation (photometric distortion, zoom-out,
IoU-constrained crop, flip, resize, box sanitising) is ``augment.TrainAugment``; the evaluation resize is
torchvision ``transforms.v2``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torchvision.transforms import v2

from ..common.config import AugmentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its input. ``stretch`` resizes to exactly ``size`` (SSD); ``keep_aspect`` fits the
    image inside ``size`` = (short side, long side) and pads batches to ``size_divisible`` (Faster R-CNN)."""

    size: tuple[int, int]  # (height, width) for stretch; (short, long) limits for keep_aspect
    resize: str = "stretch"
    mean: tuple[float, float, float] = IMAGENET_MEAN  # on the 0..1 scale
    std: tuple[float, float, float] = IMAGENET_STD
    size_divisible: int = 1

    def to_dict(self) -> dict:
        return {"size": list(self.size), "resize": self.resize, "mean": list(self.mean),
                "std": list(self.std), "size_divisible": self.size_divisible}

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        return cls(size=tuple(data["size"]), resize=data["resize"], mean=tuple(data["mean"]),
                   std=tuple(data["std"]), size_divisible=int(data["size_divisible"]))

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) an image of this size has after resizing: exactly what torchvision's
        ``Resize(short, max_size=long)`` gives (integer truncation, the long side capped second), so that
        batches can be grouped by padded size before any image is read."""
        if self.resize == "stretch":
            return self.size
        limit_short, limit_long = self.size
        short, long = sorted((height, width))
        new_short, new_long = limit_short, int(limit_short * long / short)
        if new_long > limit_long:
            new_short, new_long = int(limit_long * new_short / new_long), limit_long
        return (new_short, new_long) if height <= width else (new_long, new_short)


def normalize(images: torch.Tensor, preprocess: Preprocess,
              image_sizes: list[tuple[int, int]] | None = None) -> torch.Tensor:
    """uint8 [N,3,H,W] (any device) -> normalised float32. With ``image_sizes`` (each image's (h, w) before
    batch padding) the padding is 0 after normalising, as torchvision, detectron2 and MMDetection pad: the
    model sees the same zeros around an image whatever batch it is in (normalised uint8 zeros would be
    ``-mean / std``, about -2.1). Nothing here waits for the device, and a batch without padding (every
    SSD batch) costs the same few operations whatever its size."""
    images = images.float().div_(255.0)
    images = images.sub_(_channel_values(preprocess.mean, images.device)).div_(
        _channel_values(preprocess.std, images.device))
    height, width = images.shape[-2:]
    for index, (image_height, image_width) in enumerate(image_sizes or ()):
        if image_height < height:
            images[index, :, image_height:].zero_()
        if image_width < width:
            images[index, :, :image_height, image_width:].zero_()
    return images


@functools.lru_cache(maxsize=16)
def _channel_values(values: tuple[float, float, float], device: torch.device) -> torch.Tensor:
    """[1,3,1,1] on ``device``, made once: a fresh ``torch.tensor(..., device=cuda)`` is a copy that waits
    for the GPU to finish its queued work."""
    return torch.tensor(values, device=device).view(1, 3, 1, 1)


def _resize(preprocess: Preprocess) -> v2.Transform:
    if preprocess.resize == "stretch":
        return v2.Resize(tuple(preprocess.size), antialias=True)
    short, long = preprocess.size
    return v2.Resize(short, max_size=long, antialias=True)


def train_transform(preprocess: Preprocess, augment: AugmentConfig):
    """The SSD paper's augmentation (photometric distortion, zoom-out, IoU crop, flip) and the resize, as one
    decode-and-resize per sample (``augment.TrainAugment``); each step off when its probability is 0."""
    from .augment import TrainAugment  # augment reads images through loader, which imports this module

    return TrainAugment(preprocess, augment)


def eval_transform(preprocess: Preprocess) -> v2.Compose:
    return v2.Compose([_resize(preprocess)])
