"""The inference loop shared by evaluation during training, ``detzoo eval`` and the Predictor: a backend turns
a uint8 ``Batch`` into per-image outputs in input pixels; ``run_inference`` rescales them to the original
image as ``Detections``. ``TorchBackend`` runs a detzoo model; the ONNX Runtime backend (``predict``) has the
same call."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from ..common.memory import retain_freed_memory
from ..common.precision import autocast, check_torch_precision
from ..common.structures import Detections
from ..data.loader import Batch
from ..data.transforms import Preprocess, normalize
from ..models.selection import SelectOptions, select_with


class TorchBackend:
    """Runs a detzoo model on a uint8 batch; returns outputs in input-image pixels.

    ``precision`` ``bf16`` runs the network under bfloat16 autocast in NHWC layout (oneDNN's fast path;
    box decoding and NMS stay float32) and is refused in one line where the device has no bfloat16;
    ``channels_last`` moves the model and every batch to NHWC in fp32 too. Building a backend keeps freed
    memory in the process (``common.memory``), so that batches do not page-fault on every call."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu", precision: str = "fp32",
                 channels_last: bool = False):
        self.device = torch.device(device)
        self.precision = check_torch_precision(precision, self.device)
        self.channels_last = channels_last or precision == "bf16"
        retain_freed_memory()
        self.model = model.to(self.device).eval()
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.preprocess: Preprocess = model.preprocess

    @torch.inference_mode()
    def __call__(self, batch: Batch, options: SelectOptions | None = None) -> list[dict]:
        images = normalize(batch.images.to(self.device), self.preprocess)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            return select_with(self.model.selection, options, lambda: self.model.detect(images, batch.image_sizes))


def set_detect_precision(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """A model whose ``detect`` runs in ``precision`` from now on, as ``TorchBackend`` runs it (for torch.hub
    models, which are used without a backend): bf16 moves the weights and each call's images to NHWC and runs
    under bfloat16 autocast on the images' device. Refused in one line where the device has no bfloat16."""
    device = next(model.parameters()).device
    check_torch_precision(precision, device)
    if precision == "fp32":
        return model
    model.to(memory_format=torch.channels_last)
    detect = model.detect

    def detect_in_precision(images: torch.Tensor, image_sizes: list[tuple[int, int]] | None = None) -> list[dict]:
        with autocast(images.device, precision):
            return detect(images.contiguous(memory_format=torch.channels_last), image_sizes)

    model.detect = detect_in_precision
    return model


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
