"""SSD speed on this machine, side by side with torchvision's nearest models, in one run:
inference ms/image (batch 1 and 8, eager, post-processing included), training images/s (batch 8) and
post-processing ms/image on the same realistic score distribution (ours: one threshold, the top-k of each
class from one sort, batched_nms over the best candidates first; our former global top-k over all pairs,
``pre_nms_candidates.GlobalTopK``; torchvision: its per-class loop); and our training images/s in NCHW vs NHWC
memory layout.

Inference is timed from the model's input pixels to detections on both sides: ours from a uint8 batch
(normalisation, raw forward, decoding + NMS, as the Predictor runs it); torchvision from its list of float
images (its transform normalises and resizes, then forward and per-class post-processing). ``ssd_vgg16`` and
torchvision's ``ssd300_vgg16`` are the same network on the same 300-px input.

    python benchmarks/bench_ssd.py [--models ssd_vgg16 ssdlite_mobilenetv2 ...] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy

import torch
import torchvision
from common import machine, print_table, time_pair
from pre_nms_candidates import OLD_GLOBAL_TOP_K, GlobalTopK
from torchvision.models.detection import ssd300_vgg16, ssdlite320_mobilenet_v3_large

from detzoo.common.memory import retain_freed_memory
from detzoo.data.transforms import normalize
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


def inference_times(model, tv, tv_size: int, batch: int) -> tuple[float, float]:
    """ms/image from input pixels to detections: ours from a uint8 batch (normalise, forward, decode + NMS),
    torchvision from its list of float images (transform, forward, per-class post-processing)."""
    ours_images = torch.randint(0, 256, (batch, 3, *model.preprocess.size), dtype=torch.uint8)
    tv_images = [torch.rand(3, tv_size, tv_size) for _ in range(batch)]
    with torch.inference_mode():
        ours, theirs = time_pair(lambda: model.detect(normalize(ours_images, model.preprocess)),
                                 lambda: tv(tv_images), warmup=1, repeats=ARGS.repeats)
    return ours / batch * 1000, theirs / batch * 1000


def descend(losses: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
    """One SGD step on the summed losses."""
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()


def training_rates(model, tv, tv_size: int, batch: int = 8) -> tuple[float, float]:
    """Training images/s (forward, loss, backward, SGD step) on the same kind of batch."""
    size = model.preprocess.size
    images, targets = torch.randn(batch, 3, *size), targets_for(batch, size[0])
    tv_images = [torch.rand(3, tv_size, tv_size) for _ in range(batch)]
    tv_targets = targets_for(batch, tv_size, offset=1)  # torchvision labels are 1-based
    ours_opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    tv_opt = torch.optim.SGD(tv.parameters(), lr=1e-4, momentum=0.9)
    model.train()
    tv.train()
    ours, theirs = time_pair(lambda: descend(model.compute_loss(images, targets), ours_opt),
                             lambda: descend(tv(tv_images, tv_targets), tv_opt), warmup=1,
                             repeats=max(2, ARGS.repeats // 2))
    model.eval()
    tv.eval()
    return batch / ours, batch / theirs


def layout_rates(model, batch: int = 8) -> tuple[float, float]:
    """Our training images/s in the default (NCHW) memory layout and in NHWC (``train.channels_last``)."""
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last).train()
    model.train()
    size = model.preprocess.size
    images, targets = torch.randn(batch, 3, *size), targets_for(batch, size[0])
    images_nhwc = images.contiguous(memory_format=torch.channels_last)
    optimizers = [torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for m in (model, nhwc)]
    nchw_s, nhwc_s = time_pair(lambda: descend(model.compute_loss(images, targets), optimizers[0]),
                               lambda: descend(nhwc.compute_loss(images_nhwc, targets), optimizers[1]),
                               warmup=1, repeats=max(2, ARGS.repeats // 2))
    model.eval()
    return batch / nchw_s, batch / nhwc_s


def realistic_probabilities(anchors: int, classes: int, batch: int = 8) -> torch.Tensor:
    """Most (anchor, class) scores tiny, a long tail, a few confident anchors around objects."""
    g = torch.Generator().manual_seed(0)
    p = torch.sigmoid(torch.randn(batch, anchors, classes, generator=g) * 1.2 - 5.5)
    hot = torch.randint(0, anchors, (batch, 60), generator=g)
    cls = torch.randint(0, classes, (batch, 60), generator=g)
    for i in range(batch):
        p[i, hot[i], cls[i]] = torch.rand(60, generator=g) * 0.6 + 0.35
    return p.clamp(1e-6, 0.95)


def around_network_times(model, tv_model, tv_size: int) -> tuple[float, ...]:
    """ms/image spent outside the network, on the same probabilities and anchors: pre-processing (ours:
    normalise a uint8 batch; torchvision: its transform, which normalises, resizes and batches, plus its
    per-call anchor generation) and post-processing (ours: one threshold, top-k per class and batched_nms; our
    former global top-k; torchvision: its per-class loop, then rescaling the boxes)."""
    anchors = model.anchors
    batch = 8
    p = realistic_probabilities(anchors.shape[0], NUM_CLASSES, batch)
    regression = torch.randn(batch, anchors.shape[0], 4) * 0.2
    size = tuple(model.preprocess.size)
    if model.score_kind == "focal":
        logits = torch.logit(p)
    else:
        logits = torch.log(torch.cat([(1 - p.sum(-1, keepdim=True)).clamp(min=1e-3), p], dim=-1))
    # torchvision: softmax over [background, classes] with the same per-class probabilities
    tv_logits = torch.log(torch.cat([(1 - p.sum(-1, keepdim=True)).clamp(min=1e-3), p], dim=-1))
    head = {"bbox_regression": regression, "cls_logits": tv_logits}
    tv_anchors = [anchors] * batch

    def tv_post():
        detections = tv_model.postprocess_detections(head, tv_anchors, [size] * batch)
        return tv_model.transform.postprocess(detections, [size] * batch, [(tv_size, tv_size)] * batch)

    post_ours, post_tv = time_pair(lambda: model.postprocess(regression, logits, anchors, [size] * batch), tv_post,
                                   repeats=ARGS.repeats)
    settings = dict(model.postprocess.settings(), pre_nms_top_k=OLD_GLOBAL_TOP_K)
    old = GlobalTopK(model.postprocess.score_kind, **settings)
    post_ours, post_old = time_pair(lambda: model.postprocess(regression, logits, anchors, [size] * batch),
                                    lambda: old(regression, logits, anchors, [size] * batch), repeats=ARGS.repeats)
    ours_images = torch.randint(0, 256, (batch, 3, *size), dtype=torch.uint8)
    tv_images = [torch.rand(3, tv_size, tv_size) for _ in range(batch)]
    with torch.inference_mode():
        grid = [torch.empty(1, 1, *f.shape[-2:]) for f in tv_model.backbone(tv_images[0][None]).values()]

        def tv_pre():
            image_list, _ = tv_model.transform(tv_images)
            return tv_model.anchor_generator(image_list, grid)

        pre_ours, pre_tv = time_pair(lambda: normalize(ours_images, model.preprocess), tv_pre, repeats=ARGS.repeats)
    return (pre_ours / batch * 1000, pre_tv / batch * 1000, post_ours / batch * 1000, post_old / batch * 1000,
            post_tv / batch * 1000, anchors.shape[0])


def main() -> None:
    torch.manual_seed(0)
    retain_freed_memory()  # as every detzoo entry point does (no batch cliff); torchvision's models run with it too
    print(f"machine: {machine()}, torchvision {torchvision.__version__}")
    rows, around_rows, layout_rows = [], [], []
    tv_cache: dict[str, object] = {}
    for name in ARGS.models:
        # the same test settings as the torchvision models get (torchvision_model)
        model = create_model(name, num_classes=NUM_CLASSES, score_thresh=0.05, nms_thresh=0.6).eval()
        ref_name = REFERENCES[name]
        if ref_name not in tv_cache:
            tv_cache[ref_name] = torchvision_model(ref_name).eval()
        tv = tv_cache[ref_name]
        tv_size = 320 if "320" in ref_name else 300
        infer = [inference_times(model, tv, tv_size, batch) for batch in (1, 8)]
        train = training_rates(model, tv, tv_size)
        rows.append([name, f"{model.preprocess.size[0]}", infer[0][0], infer[1][0], train[0]])
        rows.append([f"  vs {ref_name}", str(tv_size), infer[0][1], infer[1][1], train[1]])
        rows.append(["  ratio (tv / ours)", "", infer[0][1] / infer[0][0], infer[1][1] / infer[1][0],
                     train[0] / train[1]])
        nchw, nhwc = layout_rates(model)
        layout_rows.append([name, nchw, nhwc, nhwc / nchw])
        pre_ours, pre_tv, post_ours, post_old, post_tv, anchors = around_network_times(model, tv, tv_size)
        around_rows.append([name, anchors, pre_ours, pre_tv, post_ours, post_old, post_old / post_ours, post_tv,
                            (pre_tv + post_tv) / (pre_ours + post_ours)])
    print_table("Speed (eager, CPU, random weights; ratio > 1 means ours is faster)",
                ["model", "input", "infer ms/img b1", "infer ms/img b8", "train img/s b8"], rows)
    print_table("Outside the network, batch 8, same scores (80 classes, score > 0.05, NMS 0.6, <= 100 per image; "
                f"ours: top {model.postprocess.pre_nms_top_k} per class; before: global top {OLD_GLOBAL_TOP_K})",
                ["model", "anchors", "ours pre ms/img", "tv pre ms/img", "ours post ms/img", "before post ms/img",
                 "before / ours", "tv post ms/img", "speed-up vs tv"], around_rows)
    print_table("Training memory layout (ours, batch 8): train.channels_last=false vs true",
                ["model", "NCHW img/s", "NHWC img/s", "NHWC / NCHW"], layout_rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    available = [m for m in list_models() if m in REFERENCES]
    parser.add_argument("--models", nargs="+", default=available, choices=available)
    parser.add_argument("--repeats", type=int, default=5)
    ARGS = parser.parse_args()
    main()
