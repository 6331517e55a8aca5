"""ONNX Runtime as a Predictor backend: the same uint8 ``Batch`` in, the same per-image
``{boxes, scores, labels}`` in input pixels out as ``predict.TorchBackend``, so resizing, normalising,
batching, rescaling and evaluation are the Predictor's shared code.

A ``candidates`` graph returns boxes and scores for every anchor; the backend then runs the model's own
``Postprocess.select`` (built from the file's metadata). A ``detections`` graph already ends with NMS.
Graphs without a dynamic batch (two-stage models) run one image at a time, padded like ``Collate`` pads a
batch of one and given its size before padding, as ``detect`` is given ``image_sizes``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.loader import Batch, padded_side
from ..data.transforms import normalize
from ..models.detector import CANDIDATES, IMAGE_SIZE, IMAGES
from ..models.postprocess import Postprocess
from .onnx_export import ExportError, OnnxMetadata


def session_options(threads: int | None = None):
    """ORT uses as many threads as torch does (``torch.get_num_threads()``, which follows OMP_NUM_THREADS)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    return options


def providers_for(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device in ("auto", "cuda") or device.startswith("cuda:"):
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device == "auto":
            return ["CPUExecutionProvider"]
    raise ExportError(f"device '{device}' is not available to ONNX Runtime (providers: {', '.join(available)})")


class OnnxBackend:
    """Runs a detzoo ONNX file on a uint8 batch; returns outputs in input-image pixels."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None):
        import onnxruntime as ort
        from onnxruntime.capi import onnxruntime_pybind11_state as state

        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"{self.path}: ONNX file not found")
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(threads),
                                                providers=providers_for(device))
        except (state.Fail, state.InvalidProtobuf, state.InvalidGraph, state.InvalidArgument, state.NotImplemented,
                state.RuntimeException) as exc:
            raise ExportError(f"{self.path}: ONNX Runtime cannot load it ({exc})") from None
        self.metadata = OnnxMetadata.from_props(self.session.get_modelmeta().custom_metadata_map, self.path)
        self.preprocess = self.metadata.preprocess
        self.class_names = self.metadata.class_names
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.postprocess = (Postprocess(**self.metadata.extra["postprocess"])
                            if self.metadata.outputs == CANDIDATES else None)

    def graph_inputs(self, batch: Batch) -> list[dict[str, np.ndarray]]:
        """What the graph is run on: the whole batch, or one image at a time (padded to size_divisible,
        with its size before padding)."""
        images = normalize(batch.images, self.preprocess).numpy()
        if self.metadata.dynamic_batch:
            return [{IMAGES: images}]
        div = self.preprocess.size_divisible
        return [{IMAGES: np.ascontiguousarray(images[i: i + 1, :, : padded_side(h, div), : padded_side(w, div)]),
                 IMAGE_SIZE: np.array([h, w], dtype=np.int64)} for i, (h, w) in enumerate(batch.image_sizes)]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, inputs)

    def __call__(self, batch: Batch) -> list[dict]:
        runs = [self.run(inputs) for inputs in self.graph_inputs(batch)]
        if self.postprocess is not None:
            boxes, scores = (torch.from_numpy(np.concatenate(parts)) for parts in zip(*runs))
            return self.postprocess.select(boxes, scores, batch.image_sizes)
        if self.metadata.dynamic_batch:
            return split_detections(runs[0], len(batch))
        return [split_detections(run, 1)[0] for run in runs]


def split_detections(outputs: list[np.ndarray], num_images: int) -> list[dict]:
    """Flat (batch_index, boxes, scores, labels) -> one {boxes, scores, labels} per image."""
    batch_index, boxes, scores, labels = (torch.from_numpy(np.asarray(o)) for o in outputs)
    return [{"boxes": boxes[batch_index == i].float(), "scores": scores[batch_index == i].float(),
             "labels": labels[batch_index == i].long()} for i in range(num_images)]
