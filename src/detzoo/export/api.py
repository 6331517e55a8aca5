"""What ``detzoo export`` does: checkpoint -> ONNX file with metadata -> checked against PyTorch on real
images (the file is removed when the check fails)."""

from __future__ import annotations

from pathlib import Path

from ..common.config import DatasetSpec
from ..common.errors import ExportError
from ..data.formats import read_dataset
from ..data.loader import inference_loader
from ..data.records import DataError, DetectionData
from ..predict.onnx_backend import OnnxBackend
from .check import CheckResult, check_export
from .onnx_export import OPSET, export_onnx


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
