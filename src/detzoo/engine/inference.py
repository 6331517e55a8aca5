"""The inference loop shared by evaluation during training, ``detzoo eval`` and the Predictor: a backend turns
a uint8 ``Batch`` into per-image outputs in input pixels; ``run_inference`` rescales them to the original
image as ``Detections``. ``TorchBackend`` runs a detzoo model; the ONNX Runtime backend (``predict``) has the
same call."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from ..common.structures import Detections
from ..data.loader import Batch
from ..data.transforms import Preprocess, normalize
from ..models.selection import SelectOptions, select_with


class TorchBackend:
    """Runs a detzoo model on a uint8 batch; returns outputs in input-image pixels."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.preprocess: Preprocess = model.preprocess

    @torch.inference_mode()
    def __call__(self, batch: Batch, options: SelectOptions | None = None) -> list[dict]:
        images = normalize(batch.images.to(self.device), self.preprocess)
        return select_with(self.model.selection, options, lambda: self.model.detect(images, batch.image_sizes))


def run_inference(backend, loader: Iterable[Batch], class_names: list[str],
                  options: SelectOptions | None = None) -> Iterator[Detections]:
    """Detections in original-image pixels for every image the loader yields (``options``: the selection
    settings for this run, the model's own where None)."""
    for batch in loader:
        if len(batch) == 0:
            continue
        outputs = backend(batch, options)
        for target, (height, width), output in zip(batch.targets, batch.image_sizes, outputs):
            orig_h, orig_w = target["orig_size"]
            yield Detections.from_output(output, (orig_w / width, orig_h / height), class_names,
                                         image_id=target["image_id"], path=target["path"])
