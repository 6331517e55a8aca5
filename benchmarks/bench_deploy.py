"""Deployment speed of every zoo model, in one table: PyTorch eager vs ONNX Runtime FP32 vs ONNX Runtime INT8
(static QDQ quantization calibrated on real images), ms/image at batch 1 and images/s at batch 8.

Every column runs the same thing: a pre-processed uint8 batch of real images through a Predictor backend
(normalise, network, decoding, selection) - the PyTorch backend on the model, the ONNX Runtime backend on its
export and on the INT8 file. The models have random weights (no trained weights are needed for speed); scores
then rarely pass the threshold, so the selection is cheap in every column alike.

    python benchmarks/bench_deploy.py [--models ssd300_mobilenetv2 ...] [--data ../shared/data/coco128]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import onnxruntime
import torch
from common import machine, print_table, time_call

from detzoo.common.config import DatasetSpec
from detzoo.data.formats import read_dataset
from detzoo.data.loader import inference_loader
from detzoo.engine.inference import TorchBackend
from detzoo.export.onnx_export import export_onnx
from detzoo.export.quantize import quantize_model
from detzoo.models import create_model, list_models
from detzoo.predict.onnx_backend import OnnxBackend

NUM_CLASSES = 80
DEFAULT_DATA = Path(os.environ.get("DETZOO_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "coco128"


def batch_of(data, preprocess, size: int):
    return next(iter(inference_loader(data, preprocess, batch_size=size)))


def speeds(backend, batches) -> tuple[float, float]:
    """(ms/image at batch 1, images/s at batch 8; keep-aspect models batch only images of one padded size,
    so their first batch may hold fewer)."""
    one, eight = batches
    ms = time_call(lambda: backend(one), repeats=ARGS.repeats) * 1000
    rate = len(eight) / time_call(lambda: backend(eight), warmup=1, repeats=max(2, ARGS.repeats // 2))
    return ms, rate


def bench_model(name: str, folder: Path) -> list[object]:
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES).eval()
    class_names = [f"class{i}" for i in range(NUM_CLASSES)]
    fp32 = folder / f"{name}.onnx"
    export_onnx(model, class_names, fp32)
    calibration = read_dataset(DatasetSpec(str(ARGS.data)))
    int8 = quantize_model(fp32, folder / f"{name}.int8.onnx", calibration, ARGS.calibration_images)
    data = read_dataset(DatasetSpec(str(ARGS.data)))
    batches = [batch_of(data, model.preprocess, size) for size in (1, 8)]
    eager = speeds(TorchBackend(model), batches)
    ort32 = speeds(OnnxBackend(fp32, device="cpu"), batches)
    ort8 = speeds(OnnxBackend(int8, device="cpu"), batches)
    size = "x".join(str(s) for s in model.preprocess.size)
    return [name, size, eager[0], ort32[0], ort8[0], eager[1], ort32[1], ort8[1],
            eager[0] / ort32[0], ort32[0] / ort8[0], ort8[1] / ort32[1]]


def main() -> None:
    print(f"machine: {machine()}, onnxruntime {onnxruntime.__version__} (as many threads as torch)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        for name in ARGS.models:
            rows.append(bench_model(name, Path(tmp)))
    print_table("Deployment speed (CPU; real images; ratios > 1 mean the right-hand runtime is faster)",
                ["model", "input", "eager ms b1", "ORT fp32 ms b1", "ORT int8 ms b1", "eager img/s b8",
                 "ORT fp32 img/s b8", "ORT int8 img/s b8", "fp32 vs eager b1", "int8 vs fp32 b1",
                 "int8 vs fp32 b8"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list_models(), choices=list_models())
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="images for calibration and timing")
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    ARGS = parser.parse_args()
    main()
