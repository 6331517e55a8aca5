"""Predictor: images in, Detections out. Owns resize, normalise, batching and rescaling boxes back to the
original pixels. The backend that runs the network is pluggable: PyTorch here, ONNX Runtime in
``export/runtime.py`` (``from_file`` picks it for ``.onnx`` files).
Evaluation runs through the same ``run_inference`` loop."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from .data.loader import Batch, DetectionDataset, eval_loader
from .data.records import DetectionData, ImageRecord, image_size
from .data.transforms import Preprocess, eval_transform, normalize
from .data.voc import IMAGE_SUFFIXES
from .structures import Detections


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class TorchBackend:
    """Runs a detzoo model on a uint8 batch; returns outputs in input-image pixels."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.preprocess: Preprocess = model.preprocess

    @torch.inference_mode()
    def __call__(self, batch: Batch) -> list[dict]:
        images = normalize(batch.images.to(self.device), self.preprocess)
        return self.model.detect(images, batch.image_sizes)


def run_inference(backend, loader: Iterable[Batch], class_names: list[str]) -> Iterator[Detections]:
    """Detections in original-image pixels for every image the loader yields."""
    for batch in loader:
        if len(batch) == 0:
            continue
        outputs = backend(batch)
        for target, (height, width), output in zip(batch.targets, batch.image_sizes, outputs):
            orig_h, orig_w = target["orig_size"]
            yield Detections.from_output(output, (orig_w / width, orig_h / height), class_names,
                                         image_id=target["image_id"], path=target["path"])


def list_images(source: str | Path) -> list[Path]:
    """An image file, or every image in a folder (sorted)."""
    source = Path(source)
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.suffix in IMAGE_SUFFIXES)
    raise FileNotFoundError(f"{source}: no such image or folder")


def unlabelled_data(paths: list[Path], class_names: list[str]) -> DetectionData:
    """Images without annotations, as records the data pipeline can load."""
    records = []
    for i, path in enumerate(paths):
        width, height = image_size(path, str(path))
        records.append(ImageRecord(path, width, height, boxes=np.zeros((0, 4), np.float32),
                                   labels=np.zeros(0, np.int64), iscrowd=np.zeros(0, bool),
                                   difficult=np.zeros(0, bool), image_id=i, origin=str(path)))
    return DetectionData(records, class_names, "images", "images")


class Predictor:
    def __init__(self, backend, class_names: list[str], batch_size: int = 8, workers: int = 0):
        self.backend = backend
        self.class_names = class_names
        self.batch_size = batch_size
        self.workers = workers

    @property
    def preprocess(self) -> Preprocess:
        return self.backend.preprocess

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", **kwargs) -> Predictor:
        from .models.weights import load_model

        loaded = load_model(path)
        return cls(TorchBackend(loaded.model, resolve_device(device)), loaded.class_names, **kwargs)

    @classmethod
    def from_onnx(cls, path: str | Path, device: str = "auto", **kwargs) -> Predictor:
        from .export.runtime import OnnxBackend

        backend = OnnxBackend(path, device)
        return cls(backend, backend.class_names, **kwargs)

    @classmethod
    def from_file(cls, path: str | Path, device: str = "auto", **kwargs) -> Predictor:
        """A detzoo checkpoint (.pt or a run folder) or an exported model (.onnx)."""
        if Path(path).suffix == ".onnx":
            return cls.from_onnx(path, device, **kwargs)
        return cls.from_checkpoint(path, device, **kwargs)

    def loader(self, data: DetectionData):
        dataset = DetectionDataset(data, eval_transform(self.preprocess))
        return eval_loader(dataset, self.batch_size, self.preprocess.size_divisible, self.workers)

    def predict_data(self, data: DetectionData) -> Iterator[Detections]:
        return run_inference(self.backend, self.loader(data), self.class_names)

    def predict_paths(self, paths: list[Path]) -> Iterator[Detections]:
        return self.predict_data(unlabelled_data(paths, self.class_names))

    def predict_tensor(self, image: torch.Tensor) -> Detections:
        """One decoded uint8 RGB image [3,H,W] (e.g. from an upload) -> Detections."""
        from .data.loader import Collate

        height, width = image.shape[-2:]
        resized = eval_transform(self.preprocess)(image)
        batch = Collate(self.preprocess.size_divisible)([(resized, {"orig_size": (height, width), "image_id": 0,
                                                                     "path": None})])
        return next(run_inference(self.backend, [batch], self.class_names))
