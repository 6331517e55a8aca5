"""Pre-NMS candidates: mAP of a trained SSD checkpoint with the selection detzoo used before (one global top-k
over every (anchor, class) pair) and the one it uses now (the best ``pre_nms_top_k`` of each class), side by
side, at the checkpoint's score threshold and at lower ones (COCO evaluations often use 0.01 or 0.001).

The old selection lives here only, as the baseline (``GlobalTopK``); ``bench_ssd.py`` times it against the new
one. Accuracy figures do not depend on the machine's load.

    python benchmarks/pre_nms_candidates.py CHECKPOINT --data VAL_DATA [--thresholds 0.05 0.001] [--batch-size 8]
"""

from __future__ import annotations

import argparse

import torch
from common import machine, print_table, shown, time_pair
from torchvision.ops import batched_nms, clip_boxes_to_image

from detzoo.common.config import DatasetSpec
from detzoo.data.formats import read_dataset
from detzoo.data.loader import inference_loader
from detzoo.data.transforms import normalize
from detzoo.engine.evaluate import evaluate_model
from detzoo.models.postprocess import Postprocess
from detzoo.models.weights import load_model

OLD_GLOBAL_TOP_K = 1000  # the former default, over all (anchor, class) pairs of an image


class GlobalTopK(Postprocess):
    """detzoo's selection before per-class candidates: threshold, then one top-k over all pairs."""

    def select_image(self, boxes: torch.Tensor, scores: torch.Tensor,
                     image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        num_classes = scores.shape[1]
        flat = scores.flatten()
        candidates = (flat > self.score_thresh).nonzero().squeeze(1)
        if candidates.numel() > self.pre_nms_top_k:
            candidates = candidates[flat[candidates].topk(self.pre_nms_top_k).indices]
        kept_scores = flat[candidates]
        anchor_index = torch.div(candidates, num_classes, rounding_mode="floor")
        labels = candidates % num_classes
        kept_boxes = clip_boxes_to_image(boxes[anchor_index], image_size)
        keep = batched_nms(kept_boxes, kept_scores, labels, self.nms_thresh)[: self.detections_per_img]
        return {"boxes": kept_boxes[keep], "scores": kept_scores[keep], "labels": labels[keep]}


def selections(model, score_thresh: float) -> list[tuple[str, Postprocess]]:
    """(name, post-processing) pairs with the checkpoint's own settings but ``score_thresh``."""
    settings = dict(model.postprocess.settings(), score_thresh=score_thresh)
    per_class = settings["pre_nms_top_k"]
    common = {"score_kind": model.postprocess.score_kind, "box_coder": model.postprocess.box_coder}
    before = GlobalTopK(**common, **dict(settings, pre_nms_top_k=OLD_GLOBAL_TOP_K))
    return [(f"global top {OLD_GLOBAL_TOP_K} (before)", before),
            (f"top {per_class} per class (now)", Postprocess(**common, **settings))]


def same(a, b) -> bool:
    """The same final detections (same order, boxes, scores and labels)."""
    return (len(a) == len(b) and torch.equal(a.labels, b.labels) and torch.equal(a.scores, b.scores)
            and torch.equal(a.boxes, b.boxes))


def decoded_batch(model, data) -> tuple[torch.Tensor, torch.Tensor, list]:
    """The model's boxes and scores for every anchor of the first batch (what the selection is timed on)."""
    batch = next(iter(inference_loader(data, model.preprocess, ARGS.batch_size)))
    with torch.inference_mode():
        boxes, scores = model.decoded(normalize(batch.images, model.preprocess, batch.image_sizes))
    return boxes, scores, batch.image_sizes


def main() -> None:
    print(f"machine: {machine()}")
    loaded = load_model(ARGS.checkpoint)
    model = loaded.model
    data = read_dataset(DatasetSpec(path=ARGS.data), loaded.class_names)
    boxes, scores, sizes = decoded_batch(model, data)
    rows = []
    for threshold in ARGS.thresholds or [model.postprocess.score_thresh]:
        (before_name, before_post), (now_name, now_post) = selections(model, threshold)
        before_s, now_s = time_pair(lambda post=before_post: post.select(boxes, scores, sizes),
                                    lambda post=now_post: post.select(boxes, scores, sizes), repeats=ARGS.repeats)
        results = {}
        for name, postprocess in ((before_name, before_post), (now_name, now_post)):
            model.postprocess = postprocess
            results[name] = evaluate_model(model, data, ARGS.metric, batch_size=ARGS.batch_size,
                                           score_threshold=threshold)  # this row's threshold, not 0.001
        changed = sum(not same(a, b) for a, b in zip(results[before_name][1], results[now_name][1]))
        candidates = float((scores > threshold).sum()) / len(scores)
        for name, seconds in ((before_name, before_s), (now_name, now_s)):
            result, detections = results[name]
            rows.append([f"{threshold:g}", f"{candidates:.0f}", name, f"{result.metrics['mAP']:.4f}",
                         f"{result.metrics['mAP50']:.4f}", f"{sum(len(d) for d in detections) / len(detections):.1f}",
                         f"{seconds / len(scores) * 1000:.2f}", changed if name == now_name else ""])
    print_table(f"{shown(ARGS.checkpoint)} ({loaded.config.model.name}) on {shown(ARGS.data)}: {len(data)} images, "
                f"{len(loaded.class_names)} classes, NMS {model.postprocess.nms_thresh}, "
                f"<= {model.postprocess.detections_per_img} per image (select ms/img: the first batch of "
                f"{len(scores)}, {torch.get_num_threads()} thread(s))",
                ["score >", "pairs above/img", "pre-NMS candidates", "mAP@[.5:.95]", "mAP@0.5", "detections/img",
                 "select ms/img", "images whose detections changed"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a detzoo checkpoint of an SSD model")
    parser.add_argument("--data", required=True, help="the evaluation dataset (COCO JSON, VOC, ...)")
    parser.add_argument("--metric", default="coco", choices=["coco"])
    parser.add_argument("--thresholds", type=float, nargs="*", help="score thresholds (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats of each selection")
    ARGS = parser.parse_args()
    main()
