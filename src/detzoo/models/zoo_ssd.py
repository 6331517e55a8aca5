"""SSD zoo entries (recipes.md sections 2-6), each composed from shared parts."""

from __future__ import annotations

from ..data.transforms import Preprocess
from .anchors import ssd300_mobilenetv2_anchors
from .backbones.mobilenet_v2 import SSD_BATCH_NORM, MobileNetV2Features
from .heads import PerLevelHead, prior_bias, ssdlite_predictor
from .losses import SSDLoss
from .necks import InvertedResidualExtras
from .postprocess import Postprocess
from .registry import register_model
from .ssd import SSD


def _loss_and_postprocess(loss: str, focal_alpha: float, focal_gamma: float, neg_pos_ratio: float,
                          score_thresh: float, nms_thresh: float, pre_nms_top_k: int,
                          detections_per_img: int) -> tuple[SSDLoss, Postprocess]:
    return (SSDLoss(loss, alpha=focal_alpha, gamma=focal_gamma, neg_pos_ratio=neg_pos_ratio),
            Postprocess(loss, score_thresh=score_thresh, nms_thresh=nms_thresh, pre_nms_top_k=pre_nms_top_k,
                        detections_per_img=detections_per_img))


def num_logits(num_classes: int, loss: str) -> int:
    return num_classes if loss == "focal" else num_classes + 1


@register_model
def ssd300_mobilenetv2(num_classes: int = 80, input_size: int = 300, loss: str = "focal",
                       focal_alpha: float = 0.75, focal_gamma: float = 2.0, neg_pos_ratio: float = 3.0,
                       score_thresh: float = 0.05, nms_thresh: float = 0.6, pre_nms_top_k: int = 1000,
                       detections_per_img: int = 100, width_mult: float = 1.0) -> SSD:
    """MindSpore "ssd300": MobileNetV2 (576 @ /16, 1280 @ /32), four inverted-residual extras, SSDLite
    heads, 1917 default boxes at 300 px, sigmoid focal loss (alpha 0.75)."""
    backbone = MobileNetV2Features(width_mult=width_mult)
    neck = InvertedResidualExtras(backbone.out_channels[-1], [(512, 0.2), (256, 0.25), (256, 0.5), (128, 0.25)],
                                  SSD_BATCH_NORM)
    anchors = ssd300_mobilenetv2_anchors()
    channels = backbone.out_channels + neck.out_channels
    logits = num_logits(num_classes, loss)
    head = PerLevelHead(
        [ssdlite_predictor(c, n * 4, SSD_BATCH_NORM) for c, n in zip(channels, anchors.num_anchors_per_location())],
        [ssdlite_predictor(c, n * logits, SSD_BATCH_NORM)
         for c, n in zip(channels, anchors.num_anchors_per_location())],
        logits, class_bias=prior_bias() if loss == "focal" else None)
    loss_fn, post = _loss_and_postprocess(loss, focal_alpha, focal_gamma, neg_pos_ratio, score_thresh, nms_thresh,
                                          pre_nms_top_k, detections_per_img)
    return SSD(backbone, neck, head, anchors, Preprocess((input_size, input_size)), num_classes, loss_fn, post)
