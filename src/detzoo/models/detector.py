"""The contract every zoo model meets, so the engine, evaluator, Predictor and exporter treat them alike.

- ``preprocess``: how inputs are resized and normalised (done outside the model).
- ``compute_loss(images, targets) -> dict of losses`` in training.
- ``detect(images, image_sizes) -> list of {boxes, scores, labels}`` in input-image pixels.
- ``selection``: the module holding the score threshold, NMS IoU and detections cap (``models/selection.py``).
- ``backbone``: the part ``train.freeze=backbone`` freezes and ImageNet weights load into.
- ``export_graph(in_graph_nms) -> ExportGraph``: the module the ONNX exporter traces and what its outputs
  are. The default is the whole ``detect`` on one image of any size (two-stage models); single-stage models
  export their raw network plus box decoding, with a dynamic batch (see ``SSD.export_graph``).
- ``anchor_boxes(image_size)``: the anchors boxes are matched to, for ``detzoo inspect``'s anchor coverage.
- ``flop_forward(images)``: the dense network whose FLOPs ``detzoo models`` counts (it runs on meta tensors).
- ``compile_network(**options)``: ``torch.compile`` in place of the parts whose shapes do not depend on the
  data (``--compile`` of predict / eval / serve); selection and NMS stay eager.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..data.transforms import Preprocess

IMAGES = "images"  # the graph inputs
IMAGE_SIZE = "image_size"
CANDIDATES = "candidates"  # outputs boxes [N,A,4] + scores [N,A,K]; the runtime runs Postprocess.select
DETECTIONS = "detections"  # outputs batch_index [M], boxes [M,4], scores [M], labels [M]: final detections
SELECTION_KEYS = ("score_thresh", "nms_thresh", "detections_per_img")


@dataclass
class ExportGraph:
    """What the exporter traces: ``module(images)`` on normalised float images [N,3,H,W] (dynamic batch), or
    ``module(images, image_size)`` on one padded image [1,3,H,W] and its (height, width) before padding."""

    module: nn.Module
    outputs: str  # CANDIDATES or DETECTIONS
    dynamic_batch: bool  # False: one image per run, any height and width
    metadata: dict = field(default_factory=dict)  # what the runtime needs besides the outputs (JSON values)

    @property
    def input_names(self) -> list[str]:
        return [IMAGES] if self.dynamic_batch else [IMAGES, IMAGE_SIZE]

    @property
    def output_names(self) -> list[str]:
        return ["boxes", "scores"] if self.outputs == CANDIDATES else ["batch_index", "boxes", "scores", "labels"]


class WholeDetector(nn.Module):
    """``detect`` on one image as a graph: images [1,3,H,W], image_size [2] (height, width before padding)
    -> batch_index, boxes, scores, labels."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor, image_size: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # when traced the size stays a graph value (torchvision's box ops take 0-dim tensors while tracing)
        size = (image_size[0], image_size[1]) if torch.jit.is_tracing() else tuple(image_size.tolist())
        (output,) = self.detector.detect(images, [size])
        labels = output["labels"]
        return torch.zeros_like(labels), output["boxes"], output["scores"], labels


class Detector(nn.Module):
    preprocess: Preprocess
    num_classes: int
    backbone: nn.Module

    def compute_loss(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def detect(self, images: torch.Tensor, image_sizes: list[tuple[int, int]] | None = None) -> list[dict]:
        raise NotImplementedError

    @property
    def selection(self) -> nn.Module:
        """The module holding the selection settings ``score_thresh``, ``nms_thresh`` and ``detections_per_img``
        (``models.selection`` overrides them per call)."""
        raise NotImplementedError

    def export_graph(self, in_graph_nms: bool = False) -> ExportGraph:
        """The whole model on one image of any size (NMS is always inside, with the selection settings it was
        exported with, which the metadata records)."""
        return ExportGraph(WholeDetector(self), DETECTIONS, dynamic_batch=False,
                           metadata={"postprocess": {k: getattr(self.selection, k) for k in SELECTION_KEYS}})

    def anchor_boxes(self, image_size: tuple[int, int]) -> torch.Tensor | None:
        """The anchors (xyxy, input pixels, [A, 4]) that ground-truth boxes are matched to for an input of
        ``image_size`` = (height, width) after resizing and padding; None for a model without anchors."""
        return None

    def flop_forward(self, images: torch.Tensor) -> None:
        """Run the part of the model whose FLOPs are counted, on normalised images (meta tensors work). The
        default is ``detect``; models override it to leave out what cannot run on meta tensors."""
        self.detect(images)

    def compile_network(self, **options) -> None:
        """Compile (``torch.compile(**options)``, in place: ``nn.Module.compile``, so state dict keys do not
        change) the parts of the network whose shapes depend on the input size only; the default is the
        backbone. ``options["mode"]`` "reduce-overhead" replays them as CUDA graphs."""
        self.backbone.compile(**options)
