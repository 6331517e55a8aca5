"""Images already in memory, as people hold them, turned into what the Predictor takes (uint8 RGB [3,H,W]
tensors): Pillow images, NumPy arrays [H,W,3] and uint8 tensors [3,H,W] (torchvision's layout), alone or
stacked ([N,H,W,3], [N,3,H,W]) or in lists.

The channel order of a NumPy array cannot be told from its values - OpenCV gives BGR, Pillow and imageio
RGB - so it must be stated (``channels="rgb"`` or ``"bgr"``); a guess would silently swap red and blue and
cost accuracy. Tensors follow torchvision (RGB) unless ``channels="bgr"`` says otherwise; a Pillow image
knows its own mode (``channels`` does not apply to it, nor to image files in a list). Pillow images are
turned upright by their EXIF orientation, as image files are (``data.loader.decode_rgb``). Float images are
refused: 0-1 or 0-255 cannot be told apart either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..common.errors import ConfigError

CHANNELS = ("rgb", "bgr")


def _check_channels(channels: str | None) -> None:
    if channels is not None and channels not in CHANNELS:
        raise ConfigError(f"channels must be 'rgb' or 'bgr', got {channels!r}")


def rgb_tensors(images: Any, channels: str | None = None) -> list[torch.Tensor]:
    """One in-memory image, a stack of them or a list (which may also hold image file paths, decoded as files
    are: ``channels`` is about the arrays) -> a list of uint8 RGB [3,H,W] tensors; ConfigError in one line,
    naming the list position, for anything else."""
    from ..data.loader import decode_rgb

    _check_channels(channels)
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    found: list[torch.Tensor] = []
    for position, item in enumerate(items):
        where = f"image {position} of the list" if isinstance(images, (list, tuple)) else "the image"
        if isinstance(item, (str, Path)):
            found.append(decode_rgb(item))
        elif isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim == 4:  # a stack
            found += [rgb_tensor(one, channels, f"{where}, item {i}") for i, one in enumerate(item)]
        else:
            found.append(rgb_tensor(item, channels, where))
    return found


def rgb_tensor(image: Any, channels: str | None = None, where: str = "the image") -> torch.Tensor:
    """One image -> uint8 RGB [3,H,W] (see the module docstring for what is accepted)."""
    from PIL import Image, ImageOps

    _check_channels(channels)
    if isinstance(image, Image.Image):  # its mode says what it holds: ``channels`` is about arrays
        pixels = np.array(ImageOps.exif_transpose(image).convert("RGB"))
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ConfigError(f"{where}: a NumPy image must be uint8 [H,W,3], got {image.dtype} {list(image.shape)}")
        if channels is None:
            raise ConfigError(f"{where}: say which order a NumPy image's channels are in: channels='rgb' (Pillow, "
                              "imageio) or channels='bgr' (OpenCV's cv2.imread)")
        pixels = image[:, :, ::-1] if channels == "bgr" else image
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))  # a copy: CHW, writable
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            hint = "; an [H,W,3] tensor becomes [3,H,W] with .permute(2, 0, 1)" if image.ndim == 3 and \
                image.shape[-1] == 3 else ""
            raise ConfigError(f"{where}: a tensor image must be uint8 [3,H,W], got {image.dtype} "
                              f"{list(image.shape)}{hint}")
        image = image.detach().cpu()
        return image.flip(0).contiguous() if channels == "bgr" else image.contiguous()
    raise ConfigError(f"{where}: cannot predict on a {type(image).__name__} (images: a path, a Pillow image, a "
                      "NumPy array [H,W,3] or a uint8 tensor [3,H,W], or a list of them)")
