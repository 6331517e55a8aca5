"""The two-stage detector: torchvision's Faster R-CNN parts (backbone + FPN, ``RegionProposalNetwork``,
``RoIHeads``) behind the zoo's detector contract, without torchvision's hidden ``GeneralizedRCNNTransform``.

Inputs arrive resized, normalised and padded by the data pipeline (``preprocess``: keep aspect, pad to a
multiple of 32); the model gets them as an ``ImageList`` with each image's size before padding, so proposals
and detections are clipped to the real image, not to the padding.

Labels: detzoo uses 0..K-1, torchvision 0 = background and 1..K; the shift happens here, both ways.
Crowd boxes (``iscrowd``) and VOC ``difficult`` objects are dropped from the training targets: torchvision's
anchor and proposal samplers have no "ignore" label for a ground-truth box, and treating a crowd region or an
object VOC evaluation never counts as an object would teach the model to fire on it. Images without objects
are legal (every anchor and proposal is then background).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork

from ..data.transforms import Preprocess
from .detector import Detector
from .matching import ignore_regions


class FasterRCNN(Detector):
    """``backbone`` (images -> OrderedDict of feature maps), ``rpn`` and ``roi_heads`` are torchvision modules
    with the names torchvision uses, so state dicts of torchvision's ``FasterRCNN`` load unchanged."""

    def __init__(self, backbone: nn.Module, rpn: RegionProposalNetwork, roi_heads: RoIHeads,
                 preprocess: Preprocess, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.preprocess = preprocess
        self.num_classes = num_classes

    @property
    def selection(self) -> RoIHeads:
        return self.roi_heads

    def _image_list(self, images: torch.Tensor, image_sizes: list[tuple[int, int]] | None) -> ImageList:
        sizes = image_sizes or [tuple(images.shape[-2:])] * images.shape[0]
        if len(sizes) != images.shape[0]:
            raise ValueError(f"{len(sizes)} image sizes for a batch of {images.shape[0]} images")
        if torch.jit.is_tracing():  # ONNX export: sizes stay graph values (0-dim tensors), as in torchvision
            return ImageList(images, [(h, w) for h, w in sizes])
        return ImageList(images, [(int(h), int(w)) for h, w in sizes])

    def compute_loss(self, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        """RPN and RoI-head losses. ``targets[i]``: boxes (xyxy, input pixels), labels 0..K-1, optional
        iscrowd / difficult (those boxes are dropped) and image_size (h, w before padding; default: the whole tensor).
        Train mode only: torchvision's RPN and RoI heads sample anchors and proposals only when training."""
        if not self.training:
            raise RuntimeError("FasterRCNN.compute_loss needs train mode (call model.train() first)")
        sizes = [t.get("image_size") or tuple(images.shape[-2:]) for t in targets]
        image_list = self._image_list(images, sizes)
        torchvision_targets = [self._torchvision_target(t) for t in targets]
        features = self.backbone(images)
        proposals, rpn_losses = self.rpn(image_list, features, torchvision_targets)
        _, head_losses = self.roi_heads(features, proposals, image_list.image_sizes, torchvision_targets)
        return {**rpn_losses, **head_losses}

    @staticmethod
    def _torchvision_target(target: dict) -> dict[str, torch.Tensor]:
        boxes, labels = target["boxes"], target["labels"]
        keep = ~ignore_regions(target)
        boxes, labels = boxes[keep], labels[keep]
        return {"boxes": boxes.float().reshape(-1, 4), "labels": labels.long() + 1}

    def detect(self, images: torch.Tensor, image_sizes: list[tuple[int, int]] | None = None) -> list[dict]:
        """Boxes (xyxy, clipped to each image's size), scores and labels 0..K-1, in input pixels. Eval mode
        only (in train mode torchvision's RPN wants targets)."""
        if self.training:
            raise RuntimeError("FasterRCNN.detect needs eval mode (call model.eval() first)")
        image_list = self._image_list(images, image_sizes)
        features = self.backbone(images)
        proposals, _ = self.rpn(image_list, features)
        detections, _ = self.roi_heads(features, proposals, image_list.image_sizes)
        return [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - 1} for d in detections]

    def compile_network(self, **options) -> None:
        """Backbone + FPN and the RPN head (shapes: the padded input size), and the box head and predictor
        (shapes: the proposal count, which varies: compiled for dynamic shapes, without CUDA graphs, which
        would be recorded anew for every count). Proposal selection, sampling and NMS stay eager."""
        self.backbone.compile(**options)
        self.rpn.head.compile(**options)
        per_roi = {**options, "mode": None, "dynamic": True}
        self.roi_heads.box_head.compile(**per_roi)
        self.roi_heads.box_predictor.compile(**per_roi)

    def anchor_boxes(self, image_size: tuple[int, int]) -> torch.Tensor:
        """The RPN's anchors for a padded input of ``image_size`` (its own ``AnchorGenerator``, fed feature maps
        of the backbone's sizes: ceil(side / stride); only their shapes are read)."""
        height, width = image_size
        maps = [torch.empty(1, 0, math.ceil(height / s), math.ceil(width / s)) for s in self.backbone.strides]
        images = ImageList(torch.empty(1, 0, height, width), [(height, width)])
        return self.rpn.anchor_generator(images, maps)[0]

    def flop_forward(self, images: torch.Tensor) -> None:
        """Backbone + FPN, the RPN head, and the box head and predictor on the test-time maximum of proposals
        per image (``rpn.post_nms_top_n()``, 1000 for the recipe). What runs between them (anchor decoding,
        top-k, NMS, RoIAlign) is data-dependent and no matrix product, so it is left out."""
        features = self.backbone(images)
        self.rpn.head(list(features.values()))
        pool = self.roi_heads.box_roi_pool
        size = pool.output_size
        height, width = size if isinstance(size, (tuple, list)) else (size, size)
        channels = next(iter(features.values())).shape[1]
        rois = images.new_zeros(images.shape[0] * self.rpn.post_nms_top_n(), channels, height, width)
        self.roi_heads.box_predictor(self.roi_heads.box_head(rois))
