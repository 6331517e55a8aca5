"""Deployment speed of every zoo model by precision and runtime, with a roofline column, in one run:
PyTorch eager fp32 and bf16 (the Predictor's path: BatchNorm folded, NHWC, bf16 autocast) and ONNX Runtime fp32 and INT8 (static
QDQ quantization calibrated on real images), ms per image at batch 1 and at batch 8.

Every column runs the same thing: a pre-processed uint8 batch of real coco128 images through a Predictor
backend (normalise, network, decoding, selection). The models have random weights (speed does not need trained
ones); scores then rarely pass the threshold, so the selection is cheap in every column alike. Keep-aspect
models (Faster R-CNN) get batches of same-sized images, as aspect-ratio grouping gives them; their ONNX graph
takes one image, so their ONNX batch-8 figure is 8 calls.

The roofline: the machine's peak is measured in the same run (``common.peak_rates``: the best rate of a 2048^3
matrix product in fp32, bf16 and int8), each model's operations are counted (``detzoo.models.summary.flops_of_call``, as
``detzoo models`` counts them: the convolutions, deformable ones included, and matrix products of one image, 2
per multiply-add), and each path's achieved rate at its better
batch size is given as a fraction of the peak of its precision.

    python benchmarks/bench_deploy.py [--models ssd300_mobilenetv2 ...] [--repeats 5] [--clock wall|cpu]
        [--calibration-images 32] [--profile]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import onnxruntime
import torch
from common import machine, peak_rates, print_table, time_call

from detzoo.common.config import DatasetSpec
from detzoo.common.precision import bf16_supported
from detzoo.data.formats import read_dataset
from detzoo.data.loader import inference_loader
from detzoo.data.transforms import normalize
from detzoo.engine.inference import inference_backend
from detzoo.export.onnx_export import export_onnx
from detzoo.export.quantize import quantize_model
from detzoo.models import create_model, list_models
from detzoo.models.summary import flops_of_call
from detzoo.predict.onnx_backend import OnnxBackend

NUM_CLASSES = 80
DEFAULT_DATA = Path(os.environ.get("DETZOO_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "coco128"
PATHS = ("eager fp32", "eager bf16", "ORT fp32", "ORT int8")
PEAK_OF = {"eager fp32": "fp32", "eager bf16": "bf16", "ORT fp32": "fp32", "ORT int8": "int8"}


def timing_data(preprocess):
    """coco128, restricted for keep-aspect models to its most common image size (so a batch is not padded to
    the largest of mixed shapes, which aspect-ratio grouping avoids in real use)."""
    data = read_dataset(DatasetSpec(str(ARGS.data)))
    if preprocess.resize == "keep_aspect":
        size, _ = Counter((r.width, r.height) for r in data.records).most_common(1)[0]
        data.records = [r for r in data.records if (r.width, r.height) == size]
    return data


def clock() -> float:
    return time.process_time() if ARGS.clock == "cpu" else time.perf_counter()


def per_image_ms(backend, batch) -> float:
    repeats = ARGS.repeats if len(batch) == 1 else max(2, ARGS.repeats // 2)
    return time_call(lambda: backend(batch), warmup=2, repeats=repeats, clock=clock) * 1000 / len(batch)


def backends(model, fp32_file: Path, int8_file: Path) -> dict:
    cpu = torch.device("cpu")
    found = {"eager fp32": inference_backend(model, cpu, "fp32")}  # the Predictor's: BN folded, NHWC
    found["eager bf16"] = inference_backend(model, cpu, "bf16") if bf16_supported(cpu) else None
    found["ORT fp32"] = OnnxBackend(fp32_file, device="cpu")
    found["ORT int8"] = OnnxBackend(int8_file, device="cpu")
    return found


def bench_model(name: str, folder: Path, peaks: dict) -> tuple[list, list]:
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES).eval()
    fp32_file, int8_file = folder / f"{name}.onnx", folder / f"{name}.int8.onnx"
    export_onnx(model, [f"class{i}" for i in range(NUM_CLASSES)], fp32_file)
    quantize_model(fp32_file, int8_file, read_dataset(DatasetSpec(str(ARGS.data))), ARGS.calibration_images)
    data = timing_data(model.preprocess)
    one, eight = (next(iter(inference_loader(data, model.preprocess, batch_size=n))) for n in (1, 8))
    flops = flops_of_call(lambda: model.detect(normalize(one.images, model.preprocess), one.image_sizes))
    times = {}
    for path, backend in backends(model, fp32_file, int8_file).items():
        times[path] = None if backend is None else (per_image_ms(backend, one), per_image_ms(backend, eight))
    if ARGS.profile:
        from layer_profile import print_layer_profile

        print_layer_profile(name, model, eight)
    size = "x".join(str(s) for s in one.images.shape[-2:])
    speed = [name, size, f"{flops / 1e9:.1f}"]
    speed += [f"{t[0]:.1f} / {t[1]:.1f}" if t else "n/a (no bf16)" for t in times.values()]
    fp32, bf16, ort, int8 = (times[p] for p in PATHS)
    speed += [f"{fp32[0] / bf16[0]:.2f} / {fp32[1] / bf16[1]:.2f}" if bf16 else "-",
              f"{ort[0] / int8[0]:.2f} / {ort[1] / int8[1]:.2f}",
              f"{max(t[1] / t[0] for t in times.values() if t):.2f}"]
    roofline = [name]
    for path in PATHS:
        if times[path] is None:
            roofline.append("-")
            continue
        rate = flops / (min(times[path]) / 1000)
        roofline.append(f"{rate / 1e9:.0f} ({rate / peaks[PEAK_OF[path]]:.0%})")
    best = min((min(t), p) for p, t in times.items() if t)[1]
    roofline.append(best)
    return speed, roofline


def main() -> None:
    print(f"machine: {machine()}, onnxruntime {onnxruntime.__version__} (as many threads as torch); "
          f"{ARGS.clock} time")
    peaks = peak_rates(clock=clock)
    print(f"peak (this run, 2048^3 matrix product): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 "
          f"{peaks['bf16'] / 1e9:.0f} GFLOP/s, int8 {peaks['int8'] / 1e9:.0f} GOP/s; 3x3 convolution (256 ch, "
          f"NHWC): fp32 {peaks['conv3x3 fp32'] / 1e9:.0f}, bf16 {peaks['conv3x3 bf16'] / 1e9:.0f} GFLOP/s")
    for precision in ("fp32", "bf16"):
        if peaks[f"conv3x3 {precision}"] > peaks[precision]:
            print(f"  the {precision} 3x3 convolution beats the {precision} matrix product: it does fewer "
                  "multiplications than counted (Winograd-class kernel), so fractions above 100 % are possible")
    speed, roofline = [], []
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        for name in ARGS.models:
            row, peak_row = bench_model(name, Path(tmp), peaks)
            speed.append(row)
            roofline.append(peak_row)
    print_table("Deployment speed, ms per image at batch 1 / batch 8 (CPU; real images; worst b8/b1 above 1: "
                "batch 8 is slower per image)", ["model", "input", "GFLOP/img", *PATHS, "bf16 speed-up b1 / b8",
                                "int8 vs ORT fp32 b1 / b8", "worst b8/b1"], speed)
    print_table("Roofline: achieved GFLOP/s (GOP/s for int8) at the better batch, and the fraction of the peak of "
                "its precision", ["model", *PATHS, "fastest path"], roofline)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list_models(), choices=list_models())
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="images for calibration and timing")
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: this process's CPU time (with OMP_NUM_THREADS=1, robust on a shared machine)")
    parser.add_argument("--profile", action="store_true", help="also print where each model's time goes, by "
                                                               "layer kind (benchmarks/layer_profile.py)")
    ARGS = parser.parse_args()
    main()
