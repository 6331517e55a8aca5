"""The inference loop shared by evaluation during training, ``detzoo eval`` and the Predictor: a backend turns
a uint8 ``Batch`` into per-image outputs in input pixels; ``run_inference`` rescales them to the original
image as ``Detections``. ``TorchBackend`` runs a detzoo model; the ONNX Runtime backend (``predict``) has the
same call."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from ..common.structures import Detections
from ..data.loader import Batch, dataset_order
from ..data.transforms import Preprocess, normalize


class TorchBackend:
    """Runs a detzoo model on a uint8 batch; returns outputs in input-image pixels."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.preprocess: Preprocess = model.preprocess

    @torch.inference_mode()
    def __call__(self, batch: Batch) -> list[dict]:
        images = normalize(batch.images.to(self.device), self.preprocess, batch.image_sizes)
        return self.model.detect(images, batch.image_sizes)


def run_inference(backend, loader: Iterable[Batch], class_names: list[str]) -> Iterator[Detections]:
    """Detections in original-image pixels for every image the loader yields, in dataset order: an
    inference loader batches images by padded size (``data.loader.InferenceBatchSampler``), so each result
    is held back until those of every earlier image are out. Other batch sources are passed through."""
    order = dataset_order(loader)
    pending: dict[int, Detections] = {}
    position = 0
    for batch in loader:
        if len(batch) == 0:
            continue
        outputs = backend(batch)
        for target, (height, width), output in zip(batch.targets, batch.image_sizes, outputs):
            orig_h, orig_w = target["orig_size"]
            detections = Detections.from_output(output, (orig_w / width, orig_h / height), class_names,
                                                image_id=target["image_id"], path=target["path"])
            if order is None:
                yield detections
                continue
            pending[target["index"]] = detections
        while order is not None and position < len(order) and order[position] in pending:
            yield pending.pop(order[position])
            position += 1
    yield from (pending[index] for index in sorted(pending))  # only images a loader skipped leave gaps
