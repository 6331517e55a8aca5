"""Training speed of every zoo model: the step alone against end to end, and where a step's time goes.

- **step alone**: ``Trainer.train_step`` (autocast forward, loss, backward, optimiser step, as ``detzoo train``
  runs it) over and over on one batch already on the device: what the model, loss and optimiser allow.
- **end to end**: the same ``train_step`` fed by the real training loader (persistent workers decoding and
  augmenting coco128's JPEGs, repeated to ``--images`` an epoch): what a run gets. ``e2e / step`` is the
  share of the step's speed the data pipeline lets through (1.0: the GPU never waits).
- **split** (each part synchronised, so the parts add up to more than the asynchronous step): the network
  forward (SSD: the raw network; Faster R-CNN: backbone, FPN and RPN head), the rest of the forward (the loss;
  Faster R-CNN: proposals, sampling, RoI heads and their losses), backward + optimiser, and, from the end-to-end
  run, the time the loop waited for a batch.

Side by side, as ratios: the figures issue 16 measured on one H200 before this change (bf16, NHWC), its goals,
and the references it competes with (the seeds' MindSpore recipe: 356 img/s per Ascend 910 and 264 per V100 for
ssd300_mobilenetv2, 4.5 img/s per Ascend 910 for Faster R-CNN-DCN; NVIDIA's SSD300 v1.1, ResNet-50, 724 img/s on
one A100 with AMP at batch 128). On a CPU the comparison with GPU figures only shows the table's shape.

    python benchmarks/bench_train.py                       # CPU, small: batch 2, 128 px (FPN 128, Faster R-CNN 256)
    python benchmarks/bench_train.py --device cuda         # the issue's batches and sizes, bf16, NHWC
    python benchmarks/bench_train.py --device cuda --models ssd300_mobilenetv2 --compile --decode cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import machine, print_table

from detzoo.common.config import load_config
from detzoo.common.device import data_workers, resolve_device
from detzoo.common.distributed import DistInfo
from detzoo.data.loader import close_loader
from detzoo.data.transforms import normalize
from detzoo.engine.train import build_trainer
from detzoo.engine.trainer import autocast
from detzoo.models import list_models
from detzoo.models.registry import model_options

DEFAULT_DATA = Path(os.environ.get("DETZOO_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "coco128"
# (batch, input size) per model: on a GPU the issue's; on a CPU small enough for a 2-core machine
GPU_SETTINGS = {"ssd300_mobilenetv2": (128, 300), "ssdlite_mobilenetv2": (128, 300), "ssd_vgg16": (64, 300),
                "ssd_mobilenetv1_fpn": (32, 640), "ssd_resnet50_fpn": (32, 640), "faster_rcnn_r50_fpn": (8, 800),
                "faster_rcnn_r50_fpn_dcn": (8, 800)}
CPU_SIZE = {"faster_rcnn_r50_fpn": 256, "faster_rcnn_r50_fpn_dcn": 256}  # others 128 (fixed-size models: 300)
# issue 16, one H200 (16 CPU cores), bf16 + NHWC, before this change: img/s
BEFORE = {"ssd300_mobilenetv2": {"step": 707, "e2e": 214}, "ssd_vgg16": {"step": 514},
          "ssd_resnet50_fpn": {"step": 201}, "faster_rcnn_r50_fpn": {"step": 84},
          "faster_rcnn_r50_fpn_dcn": {"step": 46}}
GOALS = {"ssd300_mobilenetv2": {"step": 2500, "e2e": 1500}, "ssd_vgg16": {"e2e": 900},
         "faster_rcnn_r50_fpn_dcn": {"step": 60}}
REFERENCES = {"ssd300_mobilenetv2": [("seed, Ascend 910, b32", 356), ("seed, V100", 264),
                                     ("NVIDIA SSD300 RN50, A100 AMP b128", 724)],
              "faster_rcnn_r50_fpn_dcn": [("seed, Ascend 910, b2", 4.5)]}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def on_device(value, device: torch.device):
    """A batch (any dataclass), dict, list or tensor with every tensor on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: on_device(getattr(value, f.name), device)
                                             for f in dataclasses.fields(value)})
    if isinstance(value, dict):
        return {key: on_device(item, device) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_device(item, device) for item in value)
    return value


def config_for(name: str, batch: int, size: int, device: torch.device, out: str):
    repeats = max(1, -(-ARGS.images // 128))  # coco128 repeated to at least --images an epoch
    settings = [f"data.train=[{', '.join([str(ARGS.data)] * repeats)}]", "data.val=[]", "train.eval_every=0",
                f"train.batch_size={batch}", f"train.amp={ARGS.amp}", f"train.device={device}",
                f"train.channels_last={str(not ARGS.nchw).lower()}", f"train.compile={str(ARGS.compile).lower()}",
                f"data.decode={ARGS.decode}", f"train.output={out}", f"train.name={name}"]
    if ARGS.workers is not None:
        settings.append(f"data.workers={ARGS.workers}")
    if "input_size" in model_options(name):
        settings.append(f"model.input_size={size}")
    return load_config(name, settings)


def network_forward(model, images: torch.Tensor) -> None:
    if hasattr(model, "anchors"):  # SSD: the raw network
        model(images)
    else:  # two-stage: the dense trunk
        model.rpn.head(list(model.backbone(images).values()))


def step_alone(trainer, batch, steps: int) -> float:
    """Images/s of ``train_step`` on one batch already on the device."""
    for _ in range(ARGS.warmup):
        trainer.train_step(batch)
    synchronize(trainer.device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batch)
    synchronize(trainer.device)
    return steps * len(batch) / (time.perf_counter() - start)


def batches(trainer):
    """The training loader's batches, epoch after epoch (``set_epoch`` before each pass, as ``fit`` does)."""
    epoch = 0
    while True:
        trainer.sampler.set_epoch(epoch)
        yield from trainer.train_loader
        epoch += 1


def batches_in_flight(loader) -> int:
    loader = getattr(loader, "loader", loader)  # a DeviceDecodingLoader's DataLoader
    return loader.num_workers * (loader.prefetch_factor or 0)


def end_to_end(trainer, steps: int) -> tuple[float, float]:
    """(images/s, seconds per step waiting for a batch) of ``train_step`` fed by the training loader. The
    batches the workers queued during the warm-up are used up before the clock starts: timed, they would
    count the queue's contents as speed."""
    stream = batches(trainer)
    for _ in range(ARGS.warmup + batches_in_flight(trainer.train_loader)):
        trainer.train_step(next(stream))
    synchronize(trainer.device)
    images, waited, start = 0, 0.0, time.perf_counter()
    for _ in range(steps):
        before = time.perf_counter()
        batch = next(stream)
        waited += time.perf_counter() - before
        images += len(batch)
        trainer.train_step(batch)
    synchronize(trainer.device)
    return images / (time.perf_counter() - start), waited / steps


def split(trainer, batch, repeats: int) -> tuple[float, float, float]:
    """Median seconds of (network forward, the rest of the forward, backward + optimiser), each synchronised."""
    model, device, cfg = trainer.model, trainer.device, trainer.cfg
    parts: list[tuple[float, float, float]] = []
    for _ in range(repeats + 1):
        images = normalize(batch.images, model.preprocess, batch.image_sizes)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        synchronize(device)
        t0 = time.perf_counter()
        with autocast(device, cfg.amp):
            network_forward(model, images)
            synchronize(device)
            t1 = time.perf_counter()
            losses = trainer.step_module(images, batch.targets)
            synchronize(device)
        t2 = time.perf_counter()
        trainer.scaler.scale(sum(losses.values())).backward()
        trainer.scaler.step(trainer.optimizer)
        trainer.scaler.update()
        trainer.optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        t3 = time.perf_counter()
        parts.append((t1 - t0, max(0.0, (t2 - t1) - (t1 - t0)), t3 - t2))
    return tuple(statistics.median(p[i] for p in parts[1:]) for i in range(3))  # type: ignore[return-value]


def measure(name: str, device: torch.device) -> dict:
    batch_size, size = GPU_SETTINGS[name] if device.type == "cuda" else (2, CPU_SIZE.get(name, 128))
    batch_size = ARGS.batch or batch_size
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(config_for(name, batch_size, ARGS.size or size, device, out), None, None,
                                DistInfo(), device)
        try:
            trainer.set_train_mode()
            batch = on_device(next(iter(trainer.train_loader)), device)
            step = step_alone(trainer, batch, ARGS.steps)
            e2e, wait = end_to_end(trainer, ARGS.steps)
            forward, rest, backward = split(trainer, batch, ARGS.repeats)
        finally:
            close_loader(trainer.train_loader)
    input_size = "x".join(str(s) for s in batch.images.shape[-2:])
    return {"model": name, "batch": batch_size, "input": input_size, "step": step, "e2e": e2e,
            "forward": forward, "rest": rest, "backward": backward, "wait": wait,
            "workers": data_workers(trainer.config.data.workers)}


def ratio(ours: float, theirs: float | None) -> str:
    return f"{ours / theirs:.3g}" if theirs else "-"


def main() -> None:
    device = resolve_device(ARGS.device)
    cuda = device.type == "cuda"
    for name, on_gpu, on_cpu in (("amp", "bf16", "none"), ("steps", 100, 4), ("warmup", 5, 2), ("images", 8192, 1024)):
        if getattr(ARGS, name) is None:
            setattr(ARGS, name, on_gpu if cuda else on_cpu)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.set_flush_denormal(True)  # as detzoo train does: denormal weights make CPU products up to 50x slower
    what = (f"amp {ARGS.amp}, {'NCHW' if ARGS.nchw else 'NHWC'}, compile {'on' if ARGS.compile else 'off'}, "
            f"decode {ARGS.decode}, {ARGS.steps} timed steps after {ARGS.warmup}")
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"machine: {machine()}{gpu}\nsettings: {what}")
    results = [measure(name, device) for name in ARGS.models]
    ms = lambda seconds: seconds * 1000  # noqa: E731
    print_table(f"Training speed on {device.type} ({what}); img/s, ms per step",
                ["model", "batch", "input", "workers", "step img/s", "e2e img/s", "e2e / step", "net fwd ms",
                 "rest fwd ms", "bwd+opt ms", "wait ms"],
                [[r["model"], r["batch"], r["input"], r["workers"], f"{r['step']:.4g}", f"{r['e2e']:.4g}",
                  f"{r['e2e'] / r['step']:.2f}", ms(r["forward"]), ms(r["rest"]), ms(r["backward"]),
                  ms(r["wait"])] for r in results])
    rows = []
    for r in results:
        before, goal = BEFORE.get(r["model"], {}), GOALS.get(r["model"], {})
        rows.append([r["model"], f"{r['step']:.4g}", before.get("step", "-"), ratio(r["step"], before.get("step")),
                     goal.get("step", "-"), f"{r['e2e']:.4g}", before.get("e2e", "-"),
                     ratio(r["e2e"], before.get("e2e")), goal.get("e2e", "-")])
        for label, figure in REFERENCES.get(r["model"], []):
            rows.append([f"  vs {label}", "", "", "", "", f"{figure}", "", ratio(r["e2e"], figure), ""])
    print_table("Against issue 16's H200 figures before this change (bf16, NHWC, the same batches) and the "
                "references (img/s; ratio > 1: ours is faster)",
                ["model", "step", "H200 before", "ratio", "goal", "e2e", "H200 before", "ratio", "goal"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list_models(), choices=list_models())
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], help="default: bf16 on CUDA, none on a CPU")
    parser.add_argument("--nchw", action="store_true", help="default memory layout instead of NHWC")
    parser.add_argument("--compile", action="store_true", help="train.compile=true")
    parser.add_argument("--decode", choices=["cpu", "cuda"], default="cpu", help="data.decode")
    parser.add_argument("--batch", type=int, help="batch size for every model (default: per model)")
    parser.add_argument("--size", type=int, help="input size for models that take one (default: per model)")
    parser.add_argument("--workers", type=int, help="data workers (default: the CPUs less one)")
    parser.add_argument("--images", type=int, help="images an epoch, coco128 repeated (default: 8192 on CUDA, "
                                                       "1024 on a CPU)")
    parser.add_argument("--steps", type=int, help="timed steps, step alone and end to end (default: 100 on CUDA, "
                                                  "4 on a CPU)")
    parser.add_argument("--warmup", type=int, help="untimed steps before each timing (default: 5 on CUDA, 2 on "
                                                   "a CPU; end to end also the batches queued in the meantime)")
    parser.add_argument("--repeats", type=int, default=3, help="synchronised steps of the split (median)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ARGS = parser.parse_args()
    main()
