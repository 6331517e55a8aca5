"""Faster R-CNN speed on this machine, side by side with torchvision's ``fasterrcnn_resnet50_fpn`` on the same
inputs, in one run: inference ms/image (batch 1, normalisation + network + post-processing) and training
images/s (batch 2, forward + backward + SGD step), and the overhead of DCNv2 over the plain backbone.

The torchvision model is built as ``fasterrcnn_resnet50_fpn`` trains with ImageNet weights (frozen batch norm,
stem and layer1 frozen), 81 classes like ours, and its transform set to the same 768 x 1280 limits; the input
is a COCO-shaped 480 x 640 image already resized to fit them (768 x 1024), so its transform only normalises.

    python benchmarks/bench_faster_rcnn.py [--size 768] [--repeats 3] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from common import machine, print_table, time_call
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from detzoo.data.transforms import normalize
from detzoo.models import create_model

NUM_CLASSES = 80
MODELS = ("faster_rcnn_r50_fpn", "faster_rcnn_r50_fpn_dcn")
REFERENCE = "torchvision fasterrcnn_resnet50_fpn"
SIZE_DIVISIBLE = 32


def torchvision_model(short: int, long: int) -> torch.nn.Module:
    """What ``fasterrcnn_resnet50_fpn(weights_backbone=ResNet50_Weights.IMAGENET1K_V1)`` builds, without the
    download: FrozenBatchNorm2d, trainable layers 3."""
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d,
                                   trainable_layers=3)
    return FasterRCNN(backbone, num_classes=NUM_CLASSES + 1, min_size=short, max_size=long)


def pad_to(images: torch.Tensor, multiple: int) -> torch.Tensor:
    height, width = (math.ceil(s / multiple) * multiple for s in images.shape[-2:])
    return torch.nn.functional.pad(images, (0, width - images.shape[-1], 0, height - images.shape[-2]))


def inputs(batch: int, height: int, width: int) -> tuple[torch.Tensor, list[dict]]:
    g = torch.Generator().manual_seed(batch)
    images = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=g)
    targets = []
    for _ in range(batch):
        xy = torch.rand(6, 2, generator=g) * torch.tensor([width, height]) * 0.6
        wh = torch.rand(6, 2, generator=g) * torch.tensor([width, height]) * 0.35 + 16
        targets.append({"boxes": torch.cat([xy, xy + wh], dim=1),
                        "labels": torch.randint(0, NUM_CLASSES, (6,), generator=g),
                        "iscrowd": torch.zeros(6, dtype=torch.bool), "image_size": (height, width)})
    return images, targets


def interleaved(calls: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, timed in turns (one call of each per round), so that a load
    change on a shared machine hits all of them alike."""
    clock = time.process_time if ARGS.clock == "cpu" else time.perf_counter
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for round_index in range(warmup + rounds):
        for name, fn in calls.items():
            seconds = time_call(fn, warmup=0, repeats=1, clock=clock)
            if round_index >= warmup:
                samples[name].append(seconds)
    return {name: statistics.median(values) for name, values in samples.items()}


def train_step(loss_fn, model) -> Callable[[], None]:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def step():
        model.train()
        loss = sum(loss_fn().values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def infer(fn) -> Callable[[], object]:
    def call():
        with torch.inference_mode():
            return fn()

    return call


def main() -> None:
    # random weights drift towards denormal floats within a few SGD steps; x86 matrix products on denormals
    # are up to 50x slower, which would time the numbers, not the models
    torch.set_flush_denormal(True)
    short, long = ARGS.size, round(ARGS.size * 1280 / 768)
    height, width = short, min(long, round(short * 640 / 480))  # a 480 x 640 COCO image after the resize
    print(f"machine: {machine()}, torchvision {torchvision.__version__}; input {height} x {width}; "
          f"{ARGS.clock} time, median of {ARGS.repeats} interleaved rounds")
    one, _ = inputs(1, height, width)
    two, targets = inputs(2, height, width)
    padded_one, padded_two = pad_to(one, SIZE_DIVISIBLE), pad_to(two, SIZE_DIVISIBLE)  # as the data pipeline
    tv_targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]  # 1-based
    models = {}
    for name in MODELS:
        torch.manual_seed(0)
        models[name] = create_model(name, num_classes=NUM_CLASSES, input_size=short)
    torch.manual_seed(0)
    models[REFERENCE] = torchvision_model(short, long)
    for model in models.values():
        model.eval()
    size = [(height, width)]
    inference = {name: infer(lambda m=models[name]: m.detect(normalize(padded_one, m.preprocess), size))
                 for name in MODELS}
    inference[REFERENCE] = infer(lambda: models[REFERENCE]([one[0].float() / 255]))
    infer_s = interleaved(inference, ARGS.repeats)
    training = {name: train_step(lambda m=models[name]: m.compute_loss(normalize(padded_two, m.preprocess), targets),
                                 models[name]) for name in MODELS}
    training[REFERENCE] = train_step(lambda: models[REFERENCE]([i.float() / 255 for i in two], tv_targets),
                                     models[REFERENCE])
    train_s = interleaved(training, ARGS.repeats)

    ref_ms, ref_rate = infer_s[REFERENCE] * 1000, 2 / train_s[REFERENCE]
    table = [[name, infer_s[name] * 1000, 2 / train_s[name], ref_ms / (infer_s[name] * 1000),
              (2 / train_s[name]) / ref_rate] for name in models]
    print_table("Speed (eager, CPU; ratios > 1 mean faster than torchvision)",
                ["model", "infer ms/img b1", "train img/s b2", "infer speed vs tv", "train speed vs tv"], table)
    plain, dcn = "faster_rcnn_r50_fpn", "faster_rcnn_r50_fpn_dcn"
    print_table("DCNv2 overhead (13 deformable 3x3 convs in layer2-4)", ["", "infer ms/img b1", "train s/step b2"],
                [[plain, infer_s[plain] * 1000, train_s[plain]], [dcn, infer_s[dcn] * 1000, train_s[dcn]],
                 ["dcn / plain", infer_s[dcn] / infer_s[plain], train_s[dcn] / train_s[plain]]])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=768, help="short-side limit (the recipe's 768)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: this process's CPU time (with OMP_NUM_THREADS=1, robust on a shared machine)")
    ARGS = parser.parse_args()
    main()
