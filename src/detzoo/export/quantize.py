"""INT8 post-training quantization of an exported model with ONNX Runtime's static quantization (QDQ format,
per-channel int8 weights, uint8 activations), calibrated on images of any dataset detzoo reads, through the
Predictor's own pre-processing; then FP32 vs INT8 accuracy and speed on an evaluation set.

Only the network is quantized. What comes after its last weight layer (box decoding, scores, NMS) and what
computes boxes for NMS or RoIAlign (two-stage proposals) stays float: 8-bit box coordinates would cost far
more accuracy than those few operations cost time.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..common.errors import ExportError
from ..data.loader import inference_loader
from ..data.records import DetectionData
from ..predict.onnx_backend import OnnxBackend, read_metadata
from .onnx_export import write_metadata

WEIGHT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
BOX_INPUTS = {"NonMaxSuppression": (0, 1), "RoiAlign": (1, 2), "TopK": (0, 1)}  # inputs that carry boxes/ranks


class CalibrationImages:
    """ONNX Runtime's CalibrationDataReader protocol: the graph inputs of ``data``'s images, one at a time
    (ORT's calibration session holds every intermediate tensor of a run: a 640-px ResNet50-FPN SSD needs about
    4 GB at batch 1 and over 18 GB at batch 8)."""

    def __init__(self, backend: OnnxBackend, data: DetectionData):
        self.backend = backend
        self.data = data
        self.rewind()

    def rewind(self) -> None:
        loader = inference_loader(self.data, self.backend.preprocess, batch_size=1)
        self._inputs = (inputs for batch in loader for inputs in self.backend.graph_inputs(batch))

    def get_next(self) -> dict | None:
        return next(self._inputs, None)


def float_nodes(graph) -> list[str]:
    """Names of the nodes that stay float (see the module docstring)."""
    producer = {out: node for node in graph.node for out in node.output}

    def ancestors(tensors: list[str], stop_at_weights: bool) -> set[str]:
        seen: set[str] = set()
        stack = [producer[t] for t in tensors if t in producer]
        while stack:
            node = stack.pop()
            if node.name in seen or (stop_at_weights and node.op_type in WEIGHT_OPS):
                continue
            seen.add(node.name)
            stack.extend(producer[t] for t in node.input if t in producer)
        return seen

    weights = [node for node in graph.node if node.op_type in WEIGHT_OPS]
    body = ancestors([t for node in weights for t in node.output], stop_at_weights=False)
    keep_float = {node.name for node in graph.node if node.name not in body}
    box_tensors = [node.input[i] for node in graph.node for i in BOX_INPUTS.get(node.op_type, ())
                   if i < len(node.input)]
    keep_float |= ancestors(box_tensors, stop_at_weights=True)
    return sorted(keep_float)


def name_nodes(model) -> None:
    """Exclusion works by node name; give unnamed nodes one."""
    counts: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        if not node.name:
            counts[node.op_type] += 1
            node.name = f"detzoo_{node.op_type}_{counts[node.op_type]}"


def quantize_model(fp32_path: str | Path, out: str | Path, calibration: DetectionData, num_images: int = 100
                   ) -> Path:
    """Static INT8 quantization of a detzoo ONNX file, calibrated on the first ``num_images`` of
    ``calibration``; the detzoo metadata is carried over (precision int8)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out = Path(fp32_path), Path(out)
    metadata = read_metadata(fp32_path)
    if metadata.precision != "fp32":
        raise ExportError(f"{fp32_path}: already quantized ({metadata.precision}); quantize the FP32 export")
    calibration = dataclasses.replace(calibration, records=calibration.records[:num_images])
    if not calibration.records:
        raise ExportError(f"no calibration images in {calibration.source}")
    backend = OnnxBackend(fp32_path, device="cpu")
    with tempfile.TemporaryDirectory(prefix="detzoo-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # ONNX shape inference + ORT's optimiser; ORT's symbolic shape inference (meant for transformers) gives
        # the same INT8 SSD graph, cannot follow two-stage graphs (data-dependent proposal counts), takes 20 s
        # to find that out and then dumps a debug copy of the model into the working directory
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        name_nodes(model)
        onnx.save(model, str(prepared))
        out.parent.mkdir(parents=True, exist_ok=True)
        quantize_static(str(prepared), str(out), CalibrationImages(backend, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=float_nodes(model.graph))
    metadata.precision = "int8"
    metadata.extra["calibration"] = {"images": len(calibration.records), "source": calibration.source}
    write_metadata(out, metadata)
    return out


class TimedBackend:
    """Wraps a backend and adds up the seconds its calls take (data loading excluded); the first batch is run
    once more beforehand, untimed, to warm the runtime up."""

    def __init__(self, backend):
        self.backend = backend
        self.preprocess = backend.preprocess
        self.seconds = 0.0
        self.images = 0

    def __call__(self, batch, options=None):
        if self.images == 0:
            self.backend(batch, options)
        start = time.perf_counter()
        outputs = self.backend(batch, options)
        self.seconds += time.perf_counter() - start
        self.images += len(batch)
        return outputs

    @property
    def ms_per_image(self) -> float:
        return 1000 * self.seconds / max(1, self.images)


@dataclass
class PrecisionResult:
    name: str
    path: Path
    metrics: dict[str, float]
    primary: str
    ms_per_image: float
    score_threshold: float | None = None  # the evaluation threshold the metrics were computed at


def evaluate_onnx(path: str | Path, data: DetectionData, metric: str = "coco", batch_size: int = 8
                  ) -> PrecisionResult:
    """Accuracy (at the evaluation threshold, as ``detzoo eval``) and speed (ms/image of the backend calls, with
    that selection) of an ONNX file."""
    from ..evaluation import evaluate_detections
    from ..predict import Predictor

    backend = OnnxBackend(path, device="cpu")
    timed = TimedBackend(backend)
    options, _ = backend.evaluation_options()
    detections = list(Predictor(timed, backend.class_names, batch_size).predict_data(data, options))
    result = evaluate_detections(detections, data, metric)
    return PrecisionResult(backend.metadata.precision, Path(path), result.metrics, result.primary,
                           timed.ms_per_image, options.score_threshold)


def comparison_table(fp32: PrecisionResult, int8: PrecisionResult) -> str:
    key = fp32.primary
    rows = [f"{'model':<6} {key:>8} {'ms/image':>9}  file"]
    rows += [f"{r.name:<6} {100 * r.metrics[key]:>8.2f} {r.ms_per_image:>9.1f}  {r.path}" for r in (fp32, int8)]
    rows.append(f"INT8 vs FP32: {100 * (int8.metrics[key] - fp32.metrics[key]):+.2f} {key} points, "
                f"{fp32.ms_per_image / int8.ms_per_image:.2f}x faster")
    if fp32.score_threshold is not None:
        rows.append(f"{key} at score >= {fp32.score_threshold:g} (the evaluation threshold), at most 100 detections "
                    "per image")
    return "\n".join(rows)
