"""The zoo table (``detzoo models``): input size, anchors, parameters and GFLOPs of every entry, counted on the
model itself, next to its card (dataset, reference accuracy, target).

Models are built on the meta device (shapes only, no memory, no arithmetic), so counting the whole zoo takes
seconds even for Faster R-CNN at 768 x 1280. FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode``
on ``Detector.flop_forward`` for one image at the model's input size; see ``FLOPS_NOTE`` for what that counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from .cards import model_card
from .detector import Detector
from .registry import create_model, list_models

FLOPS_NOTE = ("GFLOPs: torch.utils.flop_counter.FlopCounterMode on one image at the input size (FLOPs = 2 x "
              "multiply-accumulates of convolutions and matrix products; deform_conv2d counted as the "
              "convolution it deforms, its bilinear sampling not counted). Not counted: batch norm, "
              "activations, pooling, upsampling, RoIAlign, anchor decoding, NMS. Faster R-CNN: the full "
              "768x1280 box (a 640x480 COCO image becomes 768x1024), box head on 1000 proposals (the test-time "
              "maximum).")


@dataclass
class ModelSummary:
    model: str
    input: str  # "300x300" (stretched) or "768x1280 keep aspect" (the box images are fitted into)
    anchors: int | None  # at the input size
    parameters: int
    gflops: float
    dataset: str
    num_classes: int
    metric: str
    reference: str
    target: str


def _deform_conv2d_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """torchvision's deformable convolution as the convolution it deforms: 2 x MACs of the same weights."""
    return conv_flop_count(list(input_shape), list(weight_shape), list(out_shape))


def flops_of_call(fn: Callable[[], object]) -> int:
    """FLOPs of the convolutions and matrix products one call of ``fn`` runs (see ``FLOPS_NOTE``)."""
    counter = FlopCounterMode(display=False,
                              custom_mapping={torch.ops.torchvision.deform_conv2d: _deform_conv2d_flops})
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def count_flops(model: Detector, image_size: tuple[int, int]) -> int:
    """FLOPs of ``model.flop_forward`` on one image of ``image_size`` (height, width), on the model's device."""
    device = next(model.parameters()).device
    images = torch.zeros(1, 3, *image_size, device=device)
    return flops_of_call(lambda: model.flop_forward(images))


def summarize(name: str) -> ModelSummary:
    card = model_card(name)
    with torch.device("meta"):
        model = create_model(name, num_classes=card.num_classes).eval()
    pre = model.preprocess
    size = tuple(pre.size)  # (height, width); for keep-aspect models the (short, long) box, landscape
    anchors = model.anchor_boxes(size)
    shape = f"{size[0]}x{size[1]}" + (" keep aspect" if pre.resize == "keep_aspect" else "")
    return ModelSummary(name, shape, None if anchors is None else int(anchors.shape[0]),
                        sum(p.numel() for p in model.parameters()), count_flops(model, size) / 1e9,
                        card.dataset, card.num_classes, card.metric, card.reference, card.target)


def zoo_summaries(names: list[str] | None = None) -> list[ModelSummary]:
    return [summarize(name) for name in (names or list_models())]


COLUMNS = ("model", "input", "anchors", "params (M)", "GFLOPs", "dataset", "metric", "reference", "target")


def _cells(row: ModelSummary) -> list[str]:
    return [row.model, row.input, "-" if row.anchors is None else str(row.anchors), f"{row.parameters / 1e6:.2f}",
            f"{row.gflops:.1f}", f"{row.dataset} ({row.num_classes} classes)", row.metric, row.reference,
            row.target]


def format_table(rows: list[ModelSummary]) -> str:
    cells = [list(COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + ["", FLOPS_NOTE])


def format_markdown(rows: list[ModelSummary]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = _cells(row)
        cells[0] = f"`{cells[0]}`"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", FLOPS_NOTE])


def format_json(rows: list[ModelSummary]) -> str:
    return json.dumps({"models": [asdict(r) for r in rows], "note": FLOPS_NOTE}, indent=2)
