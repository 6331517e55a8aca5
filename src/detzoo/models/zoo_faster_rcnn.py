"""Faster R-CNN zoo entries (recipes.md section 7): ResNet-50-FPN with and without DCNv2 in stages 3-5,
composed from torchvision's RPN and RoI-head modules with the recipe's settings spelled out.

``input_size`` is the short-side limit of the keep-aspect resize; the long-side limit scales with it
(768 -> 1280, the recipe's 768 x 1280 box). Batches are padded to a multiple of 32.
"""

from __future__ import annotations

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign

from ..data.transforms import Preprocess
from .backbones.resnet_fpn import DCN_STAGES, FPN_CHANNELS, ResNetFPN
from .faster_rcnn import FasterRCNN
from .registry import register_model

RECIPE_SIZE = (768, 1280)  # (short, long) limits of the keep-aspect resize
SIZE_DIVISIBLE = 32
ANCHOR_SIZES = ((32,), (64,), (128,), (256,), (512,))  # 8 x stride on P2..P6
ANCHOR_RATIOS = ((0.5, 1.0, 2.0),) * len(ANCHOR_SIZES)
ROI_RESOLUTION = 7
REPRESENTATION = 1024


class FloatRPNHead(RPNHead):
    """torchvision's ``RPNHead`` whose outputs are float32 under autocast too: torchvision decodes proposals
    in the dtype of the deltas (``BoxCoder.decode`` casts the anchors to it), and bfloat16 coordinates of a
    1280-px image are 4-8 px apart. Same parameters and keys, so torchvision state dicts load."""

    def forward(self, x: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        objectness, deltas = super().forward(x)
        return [o.float() for o in objectness], [d.float() for d in deltas]


class FloatFastRCNNPredictor(FastRCNNPredictor):
    """torchvision's ``FastRCNNPredictor`` with float32 outputs (the final boxes are decoded from them, see
    ``FloatRPNHead``)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, deltas = super().forward(x)
        return scores.float(), deltas.float()


def keep_aspect_preprocess(short_side: int) -> Preprocess:
    long_side = round(short_side * RECIPE_SIZE[1] / RECIPE_SIZE[0])
    return Preprocess((short_side, long_side), resize="keep_aspect", size_divisible=SIZE_DIVISIBLE)


def build_rpn() -> RegionProposalNetwork:
    """IoU 0.7 / 0.3, 256 anchors per image (<= 50 % positive), smooth L1 beta 1/9 (torchvision's loss);
    pre-NMS top 2000 / 1000 per level (train / test), NMS 0.7, keep 2000 / 1000 per image."""
    anchors = AnchorGenerator(ANCHOR_SIZES, ANCHOR_RATIOS)
    head = FloatRPNHead(FPN_CHANNELS, anchors.num_anchors_per_location()[0])
    return RegionProposalNetwork(anchors, head, fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256,
                                 positive_fraction=0.5, pre_nms_top_n={"training": 2000, "testing": 1000},
                                 post_nms_top_n={"training": 2000, "testing": 1000}, nms_thresh=0.7)


def build_roi_heads(num_classes: int, score_thresh: float, nms_thresh: float, detections_per_img: int,
                    roi_batch_size: int) -> RoIHeads:
    """IoU 0.5, ``roi_batch_size`` (recipe: 512) RoIs per image (25 % positive), RoIAlign 7x7 sampling 2 over
    P2-P5, two FC-1024, class-specific boxes with weights (10, 10, 5, 5)."""
    pool = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=ROI_RESOLUTION, sampling_ratio=2)
    head = TwoMLPHead(FPN_CHANNELS * ROI_RESOLUTION ** 2, REPRESENTATION)
    predictor = FloatFastRCNNPredictor(REPRESENTATION, num_classes + 1)  # + background
    return RoIHeads(pool, head, predictor, fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=roi_batch_size,
                    positive_fraction=0.25, bbox_reg_weights=(10.0, 10.0, 5.0, 5.0), score_thresh=score_thresh,
                    nms_thresh=nms_thresh, detections_per_img=detections_per_img)


def _faster_rcnn_r50_fpn(num_classes: int, dcn: bool, input_size: int, score_thresh: float, nms_thresh: float,
                         detections_per_img: int, roi_batch_size: int) -> FasterRCNN:
    backbone = ResNetFPN(50, dcn_stages=DCN_STAGES if dcn else ())
    roi_heads = build_roi_heads(num_classes, score_thresh, nms_thresh, detections_per_img, roi_batch_size)
    return FasterRCNN(backbone, build_rpn(), roi_heads, keep_aspect_preprocess(input_size), num_classes)


@register_model
def faster_rcnn_r50_fpn_dcn(num_classes: int = 80, input_size: int = RECIPE_SIZE[0], score_thresh: float = 0.05,
                            nms_thresh: float = 0.5, detections_per_img: int = 100,
                            roi_batch_size: int = 512) -> FasterRCNN:
    """MindSpore "Faster R-CNN-DCN": ResNet-50-FPN whose 13 3x3 convs of layer2-4 are DCNv2 (padding 1,
    zero-initialised offset/mask predictor, ImageNet 3x3 weights loaded into them)."""
    return _faster_rcnn_r50_fpn(num_classes, True, input_size, score_thresh, nms_thresh, detections_per_img,
                                roi_batch_size)


@register_model
def faster_rcnn_r50_fpn(num_classes: int = 80, input_size: int = RECIPE_SIZE[0], score_thresh: float = 0.05,
                        nms_thresh: float = 0.5, detections_per_img: int = 100,
                        roi_batch_size: int = 512) -> FasterRCNN:
    """The baseline without DCN: the architecture of torchvision's ``fasterrcnn_resnet50_fpn`` (same module
    names, so its state dicts load), with the recipe's input size."""
    return _faster_rcnn_r50_fpn(num_classes, False, input_size, score_thresh, nms_thresh, detections_per_img,
                                roi_batch_size)
