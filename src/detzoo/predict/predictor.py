"""Predictor: images in, Detections out. Owns resize, normalise, batching and rescaling boxes back to the
original pixels. The backend that runs the network is pluggable: PyTorch here, ONNX Runtime in
``predict/onnx_backend.py`` (``from_file`` picks it for ``.onnx`` files).
Evaluation runs through the same ``run_inference`` loop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..common.config import TrackConfig
from ..common.device import resolve_device
from ..common.errors import ConfigError
from ..common.precision import check_known
from ..common.structures import Detections
from ..data.loader import Collate, inference_loader, padded_size
from ..data.records import DetectionData, ImageRecord, image_size
from ..data.transforms import Preprocess, eval_transform
from ..engine.inference import TorchBackend, inference_backend, run_inference
from ..models.selection import SelectOptions


def list_images(source: str | Path) -> list[Path]:
    """An image file, or every image in a folder (sorted; ``sources.IMAGE_SUFFIXES`` in any case; DataError when
    there is none). ``sources.resolve_source`` is the whole SOURCE argument of ``detzoo predict``."""
    from .sources import folder_images

    source = Path(source)
    if source.is_file():
        return [source]
    if source.is_dir():
        return folder_images(source, recursive=False)
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


def refuse_compile(compile: bool, why: str) -> None:
    if compile:
        raise ConfigError(f"--compile applies to PyTorch checkpoints; {why}")


class Predictor:
    """``options`` are the selection settings of every call (score threshold, NMS IoU, cap, classes; the
    model's own where None); a call may pass its own, whose unset values fall back to these."""

    def __init__(self, backend, class_names: list[str], batch_size: int = 8, workers: int = 0,
                 options: SelectOptions | None = None, tracking: TrackConfig | None = None):
        self.backend = backend
        self.class_names = class_names
        self.batch_size = batch_size
        self.workers = workers
        self.options = self._checked(options)
        self.tracking = tracking  # the tracker settings of the model's config (None: the defaults)

    def _checked(self, options: SelectOptions | None) -> SelectOptions | None:
        if options is not None:
            options.check_labels(len(self.class_names))
        return options

    def _options(self, options: SelectOptions | None) -> SelectOptions | None:
        return self._checked(options).with_defaults(self.options) if options is not None else self.options

    @property
    def preprocess(self) -> Preprocess:
        return self.backend.preprocess

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", precision: str | None = None,
                        compile: bool = False, **kwargs) -> Predictor:
        """``precision``: fp32 (default) or bf16 on PyTorch; int8 runs the quantized ONNX file beside the
        checkpoint (``best.pt`` -> ``best.int8.onnx``). ``compile``: the network through ``torch.compile``
        (CUDA graphs on a GPU), PyTorch only."""
        from ..models.weights import load_model
        from .onnx_backend import onnx_file_for

        if precision == "int8":
            refuse_compile(compile, "int8 runs the quantized ONNX file in ONNX Runtime")
            return cls.from_onnx(onnx_file_for(path, precision), device, **kwargs)
        loaded = load_model(path)
        return cls.from_model(loaded.model, loaded.class_names, device, precision, compile,
                              **{"tracking": loaded.config.track, **kwargs})

    @classmethod
    def from_model(cls, model: torch.nn.Module, class_names: list[str], device: str = "auto",
                   precision: str | None = None, compile: bool = False, **kwargs) -> Predictor:
        """A detzoo model in memory, run in ``precision`` (fp32 or bf16; ``compile`` as ``from_checkpoint``).
        The Predictor's backend changes the model (BatchNorm folded into the convolutions, NHWC layout): give
        it a copy to keep the original."""
        backend = inference_backend(model, resolve_device(device), precision or "fp32", compile)
        return cls(backend, class_names, **kwargs)

    @classmethod
    def from_onnx(cls, path: str | Path, device: str = "auto", precision: str | None = None,
                  **kwargs) -> Predictor:
        """``precision``: None runs the file as it is; fp32 or int8 pick that file (``X.onnx`` or the
        ``X.int8.onnx`` beside it); bf16 is refused."""
        from .onnx_backend import OnnxBackend, onnx_file_for

        backend = OnnxBackend(onnx_file_for(path, precision), device)
        return cls(backend, backend.class_names, **kwargs)

    @classmethod
    def from_file(cls, path: str | Path, device: str = "auto", precision: str | None = None,
                  compile: bool = False, **kwargs) -> Predictor:
        """A detzoo checkpoint (.pt or a run folder) or an exported model (.onnx), run in ``precision``
        (fp32, bf16 or int8; None: fp32 for a checkpoint, an ONNX file as it is); ``compile``: see
        ``from_checkpoint``."""
        if precision is not None:
            check_known(precision)
        if Path(path).suffix == ".onnx":
            refuse_compile(compile, f"{path} runs in ONNX Runtime")
            return cls.from_onnx(path, device, precision, **kwargs)
        return cls.from_checkpoint(path, device, precision, compile, **kwargs)

    def loader(self, data: DetectionData):
        device = self.backend.device if isinstance(self.backend, TorchBackend) else None  # pinned for a GPU
        return inference_loader(data, self.preprocess, self.batch_size, self.workers, device=device)

    def predict_data(self, data: DetectionData, options: SelectOptions | None = None) -> Iterator[Detections]:
        return run_inference(self.backend, self.loader(data), self.class_names, self._options(options))

    def predict_paths(self, paths: list[Path], options: SelectOptions | None = None) -> Iterator[Detections]:
        return self.predict_data(unlabelled_data(paths, self.class_names), options)

    def predict_images(self, images: list[torch.Tensor], options: SelectOptions | None = None) -> list[Detections]:
        """Decoded uint8 RGB images [3,H,W] (uploads, video frames) -> their Detections, as one batch."""
        resize = eval_transform(self.preprocess)
        samples = [(resize(image), {"orig_size": tuple(image.shape[-2:]), "image_id": i, "path": None})
                   for i, image in enumerate(images)]
        batch = Collate(self.preprocess.size_divisible)(samples)
        return list(run_inference(self.backend, [batch], self.class_names, self._options(options)))

    def predict_decoded(self, images: list[torch.Tensor], options: SelectOptions | None = None) -> list[Detections]:
        """Any number of decoded uint8 RGB images [3,H,W] of any sizes -> their Detections in the same order
        (``image_id``: the position). Batched as files are (``InferenceBatchSampler``): at most ``batch_size``
        images of one padded size per model call, so an image's detections do not depend on its neighbours."""
        groups: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(padded_size(*image.shape[-2:], self.preprocess), []).append(index)
        found: list[Detections | None] = [None] * len(images)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start: start + self.batch_size]
                for index, detections in zip(chunk, self.predict_images([images[i] for i in chunk], options)):
                    detections.image_id = index
                    found[index] = detections
        return found  # type: ignore[return-value]

    def predict_video(self, source, options: SelectOptions | None = None, **settings):
        """A video file, camera index or stream URL -> a generator of per-frame results (``video.VideoPrediction``:
        ``vid_stride``, ``frames``, ``batch_size``, ``live``)."""
        from .video import VideoPrediction

        return VideoPrediction(self, source, options, **settings)

    def track(self, source, options: SelectOptions | None = None, tracker: TrackConfig | None = None,
              lines=(), zones=(), **settings):
        """A video file, camera index, stream URL or image folder -> a generator of per-frame results whose
        detections carry a persistent ``track_id`` (``tracking.VideoTracking``; ``tracker``: the model's
        config's ``track`` settings by default; ``lines`` / ``zones``: "x1,y1,x2,y2" / "x1,y1,x2,y2,x3,y3,..."
        to count; ``settings`` as ``predict_video``)."""
        from .tracking import track_source

        return track_source(self, source, options, tracker, lines, zones, **settings)
