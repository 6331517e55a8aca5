"""ONNX Runtime as a Predictor backend: the same uint8 ``Batch`` in, the same per-image
``{boxes, scores, labels}`` in input pixels out as ``engine.inference.TorchBackend``, so resizing, normalising,
batching, rescaling and evaluation are the Predictor's shared code. ``OnnxMetadata`` is what a detzoo ONNX file
says about itself (``detzoo.*`` metadata entries): the exporter writes it, this backend reads it.

A ``candidates`` graph returns boxes and scores for every anchor; the backend then runs the model's own
``Postprocess.select`` (built from the file's metadata). A ``detections`` graph already ends with NMS.
Graphs without a dynamic batch (two-stage models) run one image at a time, padded like ``Collate`` pads a
batch of one and given its size before padding, as ``detect`` is given ``image_sizes``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..common.errors import ConfigError, ExportError
from ..data.loader import Batch, padded_side
from ..data.transforms import Preprocess, normalize
from ..models.detector import CANDIDATES, DETECTIONS, IMAGE_SIZE, IMAGES
from ..models.postprocess import Postprocess
from ..models.selection import (
    SelectOptions,
    apply_to_final,
    evaluation_options,
    final_evaluation_options,
    select_with,
)

PREFIX = "detzoo."
FORMAT_VERSION = 1


@dataclass
class OnnxMetadata:
    """What makes an exported file self-describing."""

    model: str  # zoo name
    class_names: list[str]
    preprocess: Preprocess
    outputs: str  # CANDIDATES or DETECTIONS (models/detector.py)
    dynamic_batch: bool
    extra: dict = field(default_factory=dict)  # model-specific values, e.g. "postprocess" settings
    precision: str = "fp32"

    def to_props(self) -> dict[str, str]:
        props = {"format": str(FORMAT_VERSION), "version": __version__, "model": self.model,
                 "class_names": json.dumps(self.class_names), "preprocess": json.dumps(self.preprocess.to_dict()),
                 "outputs": self.outputs, "dynamic_batch": json.dumps(self.dynamic_batch),
                 "precision": self.precision}
        props.update({key: json.dumps(value) for key, value in self.extra.items()})
        return {PREFIX + key: value for key, value in props.items()}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str | Path) -> OnnxMetadata:
        own = {key.removeprefix(PREFIX): value for key, value in props.items() if key.startswith(PREFIX)}
        if not own:
            raise ExportError(f"{source}: not a detzoo ONNX model (no detzoo.* metadata); make one with "
                              "`detzoo export CHECKPOINT`")
        missing = [k for k in ("model", "class_names", "preprocess", "outputs", "dynamic_batch") if k not in own]
        if missing:
            raise ExportError(f"{source}: detzoo metadata lacks {', '.join(PREFIX + k for k in missing)}")
        if own["outputs"] not in (CANDIDATES, DETECTIONS):
            raise ExportError(f"{source}: unknown detzoo.outputs '{own['outputs']}'")
        try:
            known = {"format", "version", "model", "class_names", "preprocess", "outputs", "dynamic_batch",
                     "precision"}
            return cls(own["model"], json.loads(own["class_names"]), Preprocess.from_dict(json.loads(own["preprocess"])),
                       own["outputs"], json.loads(own["dynamic_batch"]),
                       {k: json.loads(v) for k, v in own.items() if k not in known}, own.get("precision", "fp32"))
        except (ValueError, KeyError, TypeError) as exc:
            raise ExportError(f"{source}: unreadable detzoo metadata ({type(exc).__name__}: {exc})") from None


def read_metadata(path: str | Path) -> OnnxMetadata:
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: ONNX file not found")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf decode errors
        raise ExportError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from None
    return OnnxMetadata.from_props({p.key: p.value for p in proto.metadata_props}, path)


def int8_beside(path: str | Path) -> Path:
    """Where ``detzoo quantize`` writes the INT8 model of ``path``: X.onnx or X.pt -> X.int8.onnx (a run
    folder: its last.int8.onnx)."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    return path if path.name.endswith(".int8.onnx") else path.with_suffix(".int8.onnx")


def onnx_file_for(path: str | Path, precision: str | None) -> Path:
    """The ONNX file that runs ``path`` (an ONNX file, or a checkpoint for int8) in ``precision`` (None: the
    file as it is), or a ConfigError in one line: int8 is the file itself when its metadata says int8, else
    the X.int8.onnx beside it; fp32 is a file whose metadata says fp32; ONNX Runtime has no bf16 path for
    these graphs."""
    path = Path(path)
    if precision is None:
        return path
    if precision == "bf16":
        raise ConfigError(f"{path}: precision bf16 is not available on ONNX Runtime (its CPU kernels for these "
                          "graphs are fp32 and int8); run the checkpoint with bf16, or this file with int8")
    own = read_metadata(path).precision if path.suffix == ".onnx" else "fp32"  # a checkpoint is fp32
    if own == precision:
        return path
    if precision == "fp32":
        raise ConfigError(f"{path} is an {own.upper()} model; for fp32 pass the file it was quantized from")
    int8 = int8_beside(path)
    if not int8.is_file():
        raise ConfigError(f"{path}: no INT8 model ({int8} not found); make it with `detzoo quantize {path} "
                          "--data CALIBRATION_DATA`")
    if read_metadata(int8).precision != "int8":
        raise ConfigError(f"{int8}: its detzoo.precision is '{read_metadata(int8).precision}', not int8")
    return int8


def session_options(threads: int | None = None):
    """ORT uses as many threads as torch does (``torch.get_num_threads()``, which follows OMP_NUM_THREADS).
    Its threads sleep between operators instead of spin-waiting: detzoo runs the model beside other busy
    threads (video decoding and encoding, the service's decoding, data-loading workers), and spinning threads
    take their cores. On 2 cores, ``benchmarks/bench_video.py`` ran ssd300_mobilenetv2 at 64 instead of 56 frames/s
    end to end, and the model alone no slower (83 instead of 80)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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

    def _baked(self) -> dict:
        baked = self.metadata.extra.get("postprocess")
        if baked is None:
            raise ConfigError(f"{self.path} does not record the settings its NMS ran with (exported by an older "
                              "detzoo); export it again to choose score, IoU or cap at prediction time")
        return baked

    @property
    def score_threshold(self) -> float:
        """The score threshold the file selects with when a call sets none."""
        return self.postprocess.score_thresh if self.postprocess is not None else self._baked()["score_thresh"]

    def evaluation_options(self, score_threshold: float | None = None) -> tuple[SelectOptions, str]:
        """The selection mAP is computed with, and a note ("" or why the threshold had to be higher): a file
        without NMS selects like the PyTorch model; one that ends with NMS can only be made stricter."""
        if self.postprocess is not None:
            return evaluation_options(self.postprocess, score_threshold), ""
        return final_evaluation_options(self._baked(), score_threshold)

    def graph_inputs(self, batch: Batch) -> list[dict[str, np.ndarray]]:
        """What the graph is run on: the whole batch, or one image at a time (padded to size_divisible,
        with its size before padding)."""
        images = normalize(batch.images, self.preprocess, batch.image_sizes).numpy()
        if self.metadata.dynamic_batch:
            return [{IMAGES: images}]
        div = self.preprocess.size_divisible
        return [{IMAGES: np.ascontiguousarray(images[i: i + 1, :, : padded_side(h, div), : padded_side(w, div)]),
                 IMAGE_SIZE: np.array([h, w], dtype=np.int64)} for i, (h, w) in enumerate(batch.image_sizes)]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, inputs)

    def __call__(self, batch: Batch, options: SelectOptions | None = None) -> list[dict]:
        runs = [self.run(inputs) for inputs in self.graph_inputs(batch)]
        if self.postprocess is not None:
            boxes, scores = (torch.from_numpy(np.concatenate(parts)) for parts in zip(*runs))
            return select_with(self.postprocess, options,
                               lambda: self.postprocess.select(boxes, scores, batch.image_sizes))
        if self.metadata.dynamic_batch:
            outputs = split_detections(runs[0], len(batch))
        else:
            outputs = [split_detections(run, 1)[0] for run in runs]
        if options is None:
            return outputs
        baked = self._baked()
        return [apply_to_final(output, options, baked, str(self.path)) for output in outputs]


def split_detections(outputs: list[np.ndarray], num_images: int) -> list[dict]:
    """Flat (batch_index, boxes, scores, labels) -> one {boxes, scores, labels} per image."""
    batch_index, boxes, scores, labels = (torch.from_numpy(np.asarray(o)) for o in outputs)
    return [{"boxes": boxes[batch_index == i].float(), "scores": scores[batch_index == i].float(),
             "labels": labels[batch_index == i].long()} for i in range(num_images)]
