"""The single-stage detector every SSD zoo entry is built from: backbone -> neck -> head, a fixed anchor
buffer for the input size, and separate loss and post-processing callables.

``forward(images)`` is the raw network, ``(box_regression [N,A,4], class_logits [N,A,C])``. C is K for
sigmoid (focal) scoring and K+1 (0 = background) for softmax. ONNX export and quantisation see the raw network
plus box decoding (``decoded``), optionally followed by the in-graph NMS of ``Postprocess.select_in_graph``.

``convert_pretrained(state)`` turns a whole-model state dict of another codebase into this model's keys when
the zoo entry has a key map for it (e.g. pytorch-ssd's ``mb2-ssd-lite``); transfer loading applies it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..data.transforms import Preprocess
from .anchors import AnchorSpec
from .detector import CANDIDATES, DETECTIONS, Detector, ExportGraph
from .losses import SSDLoss
from .postprocess import Postprocess


class SSD(Detector):
    def __init__(self, backbone: nn.Module, neck: nn.Module, head: nn.Module, anchor_spec: AnchorSpec,
                 preprocess: Preprocess, num_classes: int, loss: SSDLoss, postprocess: Postprocess,
                 key_map: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.preprocess = preprocess
        self.num_classes = num_classes
        self.loss = loss
        self.postprocess = postprocess
        self.anchor_spec = anchor_spec
        self.key_map = key_map
        height, width = preprocess.size
        self.register_buffer("anchors", anchor_spec.make(self._feature_sizes(height, width), (height, width)),
                             persistent=False)

    @torch.no_grad()
    def _feature_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        was_training = self.training
        self.eval()
        try:
            features = self.features(torch.zeros(1, 3, height, width))
        finally:
            self.train(was_training)
        return [tuple(f.shape[-2:]) for f in features]

    def convert_pretrained(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A foreign whole-model state dict -> this model's keys (unchanged when there is no key map)."""
        return self.key_map(state) if self.key_map is not None else state

    @property
    def selection(self) -> Postprocess:
        return self.postprocess

    @property
    def score_kind(self) -> str:
        return self.loss.kind

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.neck(self.backbone(images))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.features(images))

    def compute_loss(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        box_regression, class_logits = self(images)
        return self.loss(box_regression, class_logits, self.anchors, targets)

    def decoded(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes [N,A,4] in input pixels and per-class scores [N,A,K] for every anchor."""
        return self.postprocess.decode(*self(images), self.anchors)

    def detect(self, images: torch.Tensor, image_sizes: list[tuple[int, int]] | None = None) -> list[dict]:
        sizes = image_sizes or [tuple(images.shape[-2:])] * images.shape[0]
        return self.postprocess.select(*self.decoded(images), sizes)

    def compile_network(self, **options) -> None:
        """The whole raw network (``forward``): its shapes depend on the batch size only (fixed input size)."""
        self.compile(**options)

    def anchor_boxes(self, image_size: tuple[int, int]) -> torch.Tensor:
        """The fixed anchor buffer: every input is resized to ``preprocess.size``."""
        if tuple(image_size) != tuple(self.preprocess.size):
            raise ValueError(f"{type(self).__name__} anchors exist for {tuple(self.preprocess.size)} inputs only, "
                             f"not {tuple(image_size)}")
        return self.anchors

    def flop_forward(self, images: torch.Tensor) -> None:
        """The raw network (decoding and NMS are not matrix products: FlopCounterMode would not count them)."""
        self(images)

    def export_graph(self, in_graph_nms: bool = False) -> ExportGraph:
        """The raw network + decoding with a dynamic batch; with ``in_graph_nms`` also the selection."""
        return ExportGraph(SSDGraph(self, in_graph_nms), DETECTIONS if in_graph_nms else CANDIDATES,
                           dynamic_batch=True, metadata={"postprocess": self.postprocess.settings()})


class SSDGraph(nn.Module):
    """What an SSD exports: images -> (boxes, scores) for every anchor, or final detections."""

    def __init__(self, ssd: SSD, in_graph_nms: bool):
        super().__init__()
        self.ssd = ssd
        self.in_graph_nms = in_graph_nms

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        boxes, scores = self.ssd.decoded(images)
        if not self.in_graph_nms:
            return boxes, scores
        return self.ssd.postprocess.select_in_graph(boxes, scores, tuple(self.ssd.preprocess.size))
