"""SSD zoo entries (recipes.md sections 2-6), each composed from shared parts into the one ``SSD`` detector:
a backbone, a neck, a head, an anchor layout, a loss and a post-processing step.

Every entry takes the same loss / post-processing options (``loss`` focal or softmax, ``focal_alpha``, ...);
the defaults are the entry's recipe. ``loss="softmax"`` gives the heads K+1 outputs (0 = background) and
trains with cross-entropy and hard negative mining.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..common.errors import ConfigError
from ..data.transforms import Preprocess
from .anchors import (
    multiscale_anchors,
    ssd300_mobilenetv2_anchors,
    ssd_vgg16_anchors,
    ssdlite_mobilenetv2_anchors,
)
from .backbones.mobilenet_v1 import MobileNetV1Features
from .backbones.mobilenet_v2 import SSD_BATCH_NORM, MobileNetV2Features
from .backbones.resnet import ResNet50Features
from .backbones.vgg import VGG16Features
from .heads import PerLevelHead, WeightSharedHead, prior_bias, ssdlite_predictor
from .key_maps import pytorch_ssd_lite_model
from .losses import SSDLoss
from .necks import FPN, InvertedResidualExtras, VGGExtras
from .postprocess import PRE_NMS_TOP_K, Postprocess
from .registry import register_model
from .ssd import SSD

PYTORCH_SSD_PIXELS = {"mean": (127 / 255,) * 3, "std": (128 / 255,) * 3}  # (x - 127) / 128 on 0..255 pixels


def _loss_and_postprocess(loss: str, focal_alpha: float, focal_gamma: float, neg_pos_ratio: float,
                          score_thresh: float, nms_thresh: float, pre_nms_top_k: int,
                          detections_per_img: int) -> tuple[SSDLoss, Postprocess]:
    return (SSDLoss(loss, alpha=focal_alpha, gamma=focal_gamma, neg_pos_ratio=neg_pos_ratio),
            Postprocess(loss, score_thresh=score_thresh, nms_thresh=nms_thresh, pre_nms_top_k=pre_nms_top_k,
                        detections_per_img=detections_per_img))


def num_logits(num_classes: int, loss: str) -> int:
    return num_classes if loss == "focal" else num_classes + 1


def _class_bias(loss: str) -> float | None:
    return prior_bias() if loss == "focal" else None


def _ssdlite_head(channels: list[int], anchors_per_location: list[int], logits: int, loss: str,
                  norm_layer: Callable[[int], nn.Module], depthwise_bias: bool = False,
                  plain_last: bool = False) -> PerLevelHead:
    """Per level: 3x3 depthwise + norm + ReLU6 + 1x1 for boxes and for classes; ``plain_last`` makes the last
    level a single 1x1 conv (pytorch-ssd's mb2-ssd-lite)."""
    def predictor(level: int, out_channels: int) -> nn.Module:
        if plain_last and level == len(channels) - 1:
            return nn.Conv2d(channels[level], out_channels, 1)
        return ssdlite_predictor(channels[level], out_channels, norm_layer, depthwise_bias)

    return PerLevelHead([predictor(k, n * 4) for k, n in enumerate(anchors_per_location)],
                        [predictor(k, n * logits) for k, n in enumerate(anchors_per_location)],
                        logits, class_bias=_class_bias(loss))


@register_model
def ssd300_mobilenetv2(num_classes: int = 80, input_size: int = 300, loss: str = "focal",
                       focal_alpha: float = 0.75, focal_gamma: float = 2.0, neg_pos_ratio: float = 3.0,
                       score_thresh: float = 0.05, nms_thresh: float = 0.6, pre_nms_top_k: int = PRE_NMS_TOP_K,
                       detections_per_img: int = 100, width_mult: float = 1.0) -> SSD:
    """MindSpore "ssd300": MobileNetV2 (576 @ /16, 1280 @ /32), four inverted-residual extras, SSDLite
    heads, 1917 default boxes at 300 px, sigmoid focal loss (alpha 0.75)."""
    backbone = MobileNetV2Features(width_mult=width_mult)
    neck = InvertedResidualExtras(backbone.out_channels, [(512, 0.2), (256, 0.25), (256, 0.5), (128, 0.25)],
                                  SSD_BATCH_NORM)
    anchors = ssd300_mobilenetv2_anchors()
    head = _ssdlite_head(neck.out_channels, anchors.num_anchors_per_location(), num_logits(num_classes, loss),
                         loss, SSD_BATCH_NORM)
    loss_fn, post = _loss_and_postprocess(loss, focal_alpha, focal_gamma, neg_pos_ratio, score_thresh, nms_thresh,
                                          pre_nms_top_k, detections_per_img)
    return SSD(backbone, neck, head, anchors, Preprocess((input_size, input_size)), num_classes, loss_fn, post)


@register_model
def ssdlite_mobilenetv2(num_classes: int = 20, loss: str = "softmax", focal_alpha: float = 0.75,
                        focal_gamma: float = 2.0, neg_pos_ratio: float = 3.0, score_thresh: float = 0.01,
                        nms_thresh: float = 0.45, pre_nms_top_k: int = PRE_NMS_TOP_K,
                        detections_per_img: int = 100) -> SSD:
    """pytorch-ssd "mb2-ssd-lite" (recipes.md section 6): MobileNetV2 with PyTorch's default batch norm,
    extras down to 64 channels, SSDLite heads with a biased depthwise conv and a plain 1x1 conv on the last
    level, 3000 priors at 300 px, (x - 127) / 128 input, softmax + 3:1 hard negative mining, NMS 0.45.
    pytorch-ssd's ``mb2-ssd-lite`` checkpoints load through ``model.weights`` (score threshold 0.01 as its
    evaluation)."""
    backbone = MobileNetV2Features(norm_layer=nn.BatchNorm2d)
    neck = InvertedResidualExtras(backbone.out_channels, [(512, 0.2), (256, 0.25), (256, 0.5), (64, 0.25)],
                                  nn.BatchNorm2d)
    anchors = ssdlite_mobilenetv2_anchors()
    head = _ssdlite_head(neck.out_channels, anchors.num_anchors_per_location(), num_logits(num_classes, loss),
                         loss, nn.BatchNorm2d, depthwise_bias=True, plain_last=True)
    loss_fn, post = _loss_and_postprocess(loss, focal_alpha, focal_gamma, neg_pos_ratio, score_thresh, nms_thresh,
                                          pre_nms_top_k, detections_per_img)
    return SSD(backbone, neck, head, anchors, Preprocess((300, 300), **PYTORCH_SSD_PIXELS), num_classes, loss_fn,
               post, key_map=pytorch_ssd_lite_model)


@register_model
def ssd_vgg16(num_classes: int = 80, loss: str = "focal", focal_alpha: float = 0.75, focal_gamma: float = 2.0,
              neg_pos_ratio: float = 3.0, score_thresh: float = 0.05, nms_thresh: float = 0.6,
              pre_nms_top_k: int = PRE_NMS_TOP_K, detections_per_img: int = 100) -> SSD:
    """The SSD paper's SSD300 (recipes.md section 5) as torchvision's ``ssd300_vgg16`` builds it: VGG16 with
    L2Norm on conv4_3, fc6/fc7 and the extras, a 3x3 conv predictor per level with 4, 6, 6, 6, 4, 4 boxes per
    location (8732), focal loss alpha 0.75 (``loss=softmax``: the paper's hard negative mining)."""
    backbone = VGG16Features()
    neck = VGGExtras()
    anchors = ssd_vgg16_anchors()
    logits = num_logits(num_classes, loss)
    pairs = list(zip(neck.out_channels, anchors.num_anchors_per_location()))
    head = PerLevelHead([nn.Conv2d(c, n * 4, 3, padding=1) for c, n in pairs],
                        [nn.Conv2d(c, n * logits, 3, padding=1) for c, n in pairs], logits,
                        class_bias=_class_bias(loss))
    loss_fn, post = _loss_and_postprocess(loss, focal_alpha, focal_gamma, neg_pos_ratio, score_thresh, nms_thresh,
                                          pre_nms_top_k, detections_per_img)
    return SSD(backbone, neck, head, anchors, Preprocess((300, 300)), num_classes, loss_fn, post)


def _ssd_fpn(backbone: nn.Module, num_classes: int, input_size: int, loss: str, focal_alpha: float,
             focal_gamma: float, neg_pos_ratio: float, score_thresh: float, nms_thresh: float, pre_nms_top_k: int,
             detections_per_img: int) -> SSD:
    """The SSD-FPN family (recipes.md sections 3-4): three backbone maps (strides 8, 16, 32) -> FPN P3-P7 with
    256 channels -> weight-shared head over 6 multiscale anchors per location."""
    if input_size % 32:  # C3-C5 then halve exactly, so the FPN's 2x nearest upsampling lines up
        raise ConfigError(f"model.input_size {input_size}: the SSD-FPN models need a multiple of 32 (C5 has "
                          "stride 32), e.g. 640")
    neck = FPN(backbone.out_channels, 256, extra_levels=2, norm_layer=SSD_BATCH_NORM)
    anchors = multiscale_anchors(input_size)
    head = WeightSharedHead(256, len(neck.out_channels), anchors.num_anchors_per_location()[0], num_logits(num_classes, loss),
                            depth=4, norm_layer=SSD_BATCH_NORM, class_bias=_class_bias(loss))
    loss_fn, post = _loss_and_postprocess(loss, focal_alpha, focal_gamma, neg_pos_ratio, score_thresh, nms_thresh,
                                          pre_nms_top_k, detections_per_img)
    return SSD(backbone, neck, head, anchors, Preprocess((input_size, input_size)), num_classes, loss_fn, post)


@register_model
def ssd_mobilenetv1_fpn(num_classes: int = 80, input_size: int = 640, loss: str = "focal", focal_alpha: float = 0.25,
                        focal_gamma: float = 2.0, neg_pos_ratio: float = 3.0, score_thresh: float = 0.05,
                        nms_thresh: float = 0.6, pre_nms_top_k: int = PRE_NMS_TOP_K,
                        detections_per_img: int = 100) -> SSD:
    """MindSpore "ssd_mobilenet_v1_fpn" (recipes.md section 3): MobileNetV1 (pointwise layers 5, 11, 13) + FPN
    P3-P7 + weight-shared head, 51150 anchors at 640 px, focal loss alpha 0.25."""
    return _ssd_fpn(MobileNetV1Features(), num_classes, input_size, loss, focal_alpha, focal_gamma, neg_pos_ratio,
                    score_thresh, nms_thresh, pre_nms_top_k, detections_per_img)


@register_model
def ssd_resnet50_fpn(num_classes: int = 80, input_size: int = 640, loss: str = "focal", focal_alpha: float = 0.25,
                     focal_gamma: float = 2.0, neg_pos_ratio: float = 3.0, score_thresh: float = 0.05,
                     nms_thresh: float = 0.6, pre_nms_top_k: int = PRE_NMS_TOP_K,
                     detections_per_img: int = 100) -> SSD:
    """MindSpore "ssd_resnet50_fpn" (recipes.md section 4): ResNet-50 C3-C5 + FPN P3-P7 + weight-shared head,
    51150 anchors at 640 px, focal loss alpha 0.25."""
    return _ssd_fpn(ResNet50Features(), num_classes, input_size, loss, focal_alpha, focal_gamma, neg_pos_ratio,
                    score_thresh, nms_thresh, pre_nms_top_k, detections_per_img)
