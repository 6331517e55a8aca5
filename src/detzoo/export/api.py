"""What ``detzoo export`` and ``detzoo quantize`` do (and ``Model.export`` / ``Model.quantize``): checkpoint ->
ONNX file with metadata -> checked against PyTorch on real images (the file is removed when the check fails);
ONNX file -> INT8 file calibrated on a dataset, then both evaluated side by side."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..common.config import DatasetSpec
from ..common.errors import ExportError
from ..data.formats import read_dataset
from ..data.loader import inference_loader
from ..data.records import DataError, DetectionData
from ..predict.onnx_backend import OnnxBackend
from .check import CheckResult, check_export
from .onnx_export import OPSET, export_onnx
from .quantize import PrecisionResult, comparison_table, evaluate_onnx, quantize_model


def default_output(checkpoint: str | Path) -> Path:
    """runs/x/best.pt -> runs/x/best.onnx; a run folder -> its last.onnx."""
    checkpoint = Path(checkpoint)
    return checkpoint / "last.onnx" if checkpoint.is_dir() else checkpoint.with_suffix(".onnx")


def images_to_check(source: str | Path | None, config, class_names: list[str], count: int) -> DetectionData:
    """The first ``count`` images of ``source`` (an image or a folder of images), or by default of the
    checkpoint's validation (else training) dataset."""
    from ..predict import list_images, unlabelled_data

    if source is not None:
        data = unlabelled_data(list_images(source), class_names)
    else:
        specs: list[DatasetSpec] = [*config.data.val, *config.data.train]
        data = None
        for spec in specs:
            try:
                data = read_dataset(spec, class_names, skip_bad=True)
                break
            except DataError:
                continue
        if data is None:
            tried = ", ".join(s.path for s in specs) or "none in the checkpoint's config"
            raise ExportError(f"no images to check the export on (datasets tried: {tried}); pass --check-images")
    data.records = data.records[:count]
    if not data.records:
        raise ExportError(f"no images to check the export on in {source or data.source}")
    return data


def export_checkpoint(checkpoint: str | Path, out: str | Path | None = None, in_graph_nms: bool = False,
                      check_images: str | Path | None = None, check_count: int = 8, tolerance: float | None = None,
                      opset: int | None = None) -> tuple[Path, CheckResult]:
    """Export a checkpoint and check the file; raises ExportError (and removes the file) when ONNX Runtime and
    PyTorch differ by more than float32 arithmetic explains (``export/check.py``; ``tolerance`` overrides the
    relative error budget derived from the model's layers)."""
    from ..models.weights import load_model

    loaded = load_model(checkpoint)
    out = Path(out) if out else default_output(checkpoint)
    data = images_to_check(check_images, loaded.config, loaded.class_names, check_count)
    graph, _ = export_onnx(loaded.model, loaded.class_names, out, in_graph_nms, opset or OPSET)
    try:
        backend = OnnxBackend(out, device="cpu")
        result = check_export(graph, backend, inference_loader(data, backend.preprocess, batch_size=4), tolerance)
        if not result.passed():
            allowed = f"tolerance {tolerance:g}" if tolerance is not None else "float32 tolerance"
            raise ExportError(f"{out}: the export check failed ({allowed}; the file was removed): "
                              f"{result.summary()}")
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return out, result


@dataclass
class QuantizeReport:
    path: Path  # the INT8 file
    calibration: str  # "N image(s) of SOURCE"
    evaluation: str
    fp32: PrecisionResult
    int8: PrecisionResult

    @property
    def table(self) -> str:
        """FP32 vs INT8: accuracy, ms per image, the difference."""
        return comparison_table(self.fp32, self.int8)


def quantize_onnx(model: str | Path, calibration: DatasetSpec, evaluation: DatasetSpec | None = None,
                  classes: list[str] | None = None, calibration_images: int = 100, metric: str = "coco",
                  batch_size: int = 8, skip_bad: bool = False, out: str | Path | None = None,
                  log=print) -> QuantizeReport:
    """Quantize a detzoo ONNX file (default output: MODEL.int8.onnx) on the first ``calibration_images`` of
    ``calibration``, then evaluate both files on ``evaluation`` (default: the calibration dataset)."""
    from ..predict.onnx_backend import read_metadata

    metadata = read_metadata(model)
    calibration_data = read_dataset(calibration, classes, skip_bad)
    out = Path(out) if out else Path(model).with_suffix(".int8.onnx")
    quantize_model(model, out, calibration_data, calibration_images)
    calibrated = f"{min(calibration_images, len(calibration_data))} image(s) of {calibration_data.source}"
    log(f"INT8 model -> {out} (calibrated on {calibrated})")
    data = read_dataset(evaluation or calibration, metadata.class_names, skip_bad)
    fp32, int8 = (evaluate_onnx(path, data, metric, batch_size) for path in (model, out))
    return QuantizeReport(out, calibrated, f"{len(data)} image(s) of {data.source}", fp32, int8)
