"""SSD speed on this machine, side by side with torchvision's nearest models, in one run:
inference ms/image (batch 1 and 8, eager, post-processing included), training images/s (batch 8) and
post-processing ms/image on the same realistic score distribution (ours: one threshold, one top-k, one
batched_nms; torchvision: its per-class loop).

    python benchmarks/bench_ssd.py [--models ssd300_mobilenetv2 ...] [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from common import machine, print_table, time_call
from torchvision.models.detection import ssd300_vgg16, ssdlite320_mobilenet_v3_large

from detzoo.models import create_model, list_models

# our model -> the torchvision model it is compared with
REFERENCES = {"ssd300_mobilenetv2": "ssdlite320_mobilenet_v3_large", "ssdlite_mobilenetv2": "ssdlite320_mobilenet_v3_large",
              "ssd_mobilenetv1_fpn": "ssdlite320_mobilenet_v3_large", "ssd_vgg16": "ssd300_vgg16",
              "ssd_resnet50_fpn": "ssd300_vgg16"}
NUM_CLASSES = 80


def torchvision_model(name: str):
    builder = {"ssdlite320_mobilenet_v3_large": ssdlite320_mobilenet_v3_large, "ssd300_vgg16": ssd300_vgg16}[name]
    # same class count as ours (+ background), same test settings as our post-processing
    model = builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1)
    model.score_thresh, model.nms_thresh, model.detections_per_img = 0.05, 0.6, 100
    return model


def targets_for(batch: int, size: int, offset: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(batch)
    out = []
    for _ in range(batch):
        xy = torch.rand(4, 2, generator=g) * size * 0.6
        wh = torch.rand(4, 2, generator=g) * size * 0.35 + 8
        out.append({"boxes": torch.cat([xy, xy + wh], dim=1),
                    "labels": torch.randint(0, NUM_CLASSES, (4,), generator=g) + offset})
    return out


def ours_inference(model, batch: int) -> float:
    size = model.preprocess.size
    images = torch.randn(batch, 3, *size)
    with torch.inference_mode():
        return time_call(lambda: model.detect(images), repeats=ARGS.repeats) / batch * 1000


def tv_inference(model, size: int, batch: int) -> float:
    images = [torch.rand(3, size, size) for _ in range(batch)]
    with torch.inference_mode():
        return time_call(lambda: model(images), repeats=ARGS.repeats) / batch * 1000


def train_rate(step, batch: int) -> float:
    return batch / time_call(step, warmup=1, repeats=max(2, ARGS.repeats // 2))


def ours_train(model, batch: int = 8) -> float:
    size = model.preprocess.size
    images, targets = torch.randn(batch, 3, *size), targets_for(batch, size[0])
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step():
        loss = sum(model.compute_loss(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.train()
    rate = train_rate(step, batch)
    model.eval()
    return rate


def tv_train(model, size: int, batch: int = 8) -> float:
    images = [torch.rand(3, size, size) for _ in range(batch)]
    targets = targets_for(batch, size, offset=1)  # torchvision labels are 1-based
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step():
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.train()
    rate = train_rate(step, batch)
    model.eval()
    return rate


def realistic_probabilities(anchors: int, classes: int, batch: int = 8) -> torch.Tensor:
    """Most (anchor, class) scores tiny, a long tail, a few confident anchors around objects."""
    g = torch.Generator().manual_seed(0)
    p = torch.sigmoid(torch.randn(batch, anchors, classes, generator=g) * 1.2 - 5.5)
    hot = torch.randint(0, anchors, (batch, 60), generator=g)
    cls = torch.randint(0, classes, (batch, 60), generator=g)
    for i in range(batch):
        p[i, hot[i], cls[i]] = torch.rand(60, generator=g) * 0.6 + 0.35
    return p.clamp(1e-6, 0.95)


def postprocess_times(model, tv_model) -> tuple[float, float, int]:
    """ms/image of our post-processing and torchvision's on the same probabilities and anchors."""
    anchors = model.anchors
    batch = 8
    p = realistic_probabilities(anchors.shape[0], NUM_CLASSES, batch)
    regression = torch.randn(batch, anchors.shape[0], 4) * 0.2
    size = tuple(model.preprocess.size)
    if model.score_kind == "focal":
        logits = torch.logit(p)
    else:
        logits = torch.log(torch.cat([(1 - p.sum(-1, keepdim=True)).clamp(min=1e-3), p], dim=-1))
    ours = time_call(lambda: model.postprocess(regression, logits, anchors, [size] * batch), repeats=ARGS.repeats)
    # torchvision: softmax over [background, classes] with the same per-class probabilities
    tv_logits = torch.log(torch.cat([(1 - p.sum(-1, keepdim=True)).clamp(min=1e-3), p], dim=-1))
    head = {"bbox_regression": regression, "cls_logits": tv_logits}
    tv_anchors = [anchors] * batch
    theirs = time_call(lambda: tv_model.postprocess_detections(head, tv_anchors, [size] * batch),
                       repeats=ARGS.repeats)
    return ours / batch * 1000, theirs / batch * 1000, anchors.shape[0]


def main() -> None:
    torch.manual_seed(0)
    print(f"machine: {machine()}, torchvision {torchvision.__version__}")
    rows, post_rows = [], []
    tv_cache: dict[str, object] = {}
    for name in ARGS.models:
        model = create_model(name, num_classes=NUM_CLASSES).eval()
        ref_name = REFERENCES[name]
        if ref_name not in tv_cache:
            tv_cache[ref_name] = torchvision_model(ref_name).eval()
        tv = tv_cache[ref_name]
        tv_size = 320 if "320" in ref_name else 300
        ours = [ours_inference(model, 1), ours_inference(model, 8), ours_train(model)]
        theirs = [tv_inference(tv, tv_size, 1), tv_inference(tv, tv_size, 8), tv_train(tv, tv_size)]
        rows.append([name, f"{model.preprocess.size[0]}", ours[0], ours[1], ours[2]])
        rows.append([f"  vs {ref_name}", str(tv_size), theirs[0], theirs[1], theirs[2]])
        rows.append(["  ratio (tv / ours)", "", theirs[0] / ours[0], theirs[1] / ours[1], ours[2] / theirs[2]])
        post_ours, post_tv, anchors = postprocess_times(model, tv)
        post_rows.append([name, anchors, post_ours, post_tv, post_tv / post_ours])
    print_table("Speed (eager, CPU; ratio > 1 means ours is faster)",
                ["model", "input", "infer ms/img b1", "infer ms/img b8", "train img/s b8"], rows)
    print_table("Post-processing on the same scores (80 classes, score > 0.05, NMS 0.6, <= 100 per image)",
                ["model", "anchors", "ours ms/img", "torchvision ms/img", "speed-up"], post_rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    available = [m for m in list_models() if m in REFERENCES]
    parser.add_argument("--models", nargs="+", default=available, choices=available)
    parser.add_argument("--repeats", type=int, default=5)
    ARGS = parser.parse_args()
    main()
