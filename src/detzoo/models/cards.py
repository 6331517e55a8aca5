"""What each zoo entry is trained on and measured against: the one place the reference accuracies and the
targets live (``detzoo models`` prints them; the README's model table is that command's output).

The recipes (``configs/<name>.yaml``) hold the training settings; these cards hold the figures they aim at.
"""

from __future__ import annotations

from dataclasses import dataclass

COCO_BOX_MAP = "COCO val2017 box mAP@[.5:.95] (%)"
VOC07_MAP = "VOC07 test mAP@0.5, 11-point"


@dataclass(frozen=True)
class ModelCard:
    dataset: str  # what the recipe trains on
    num_classes: int  # that dataset's class count (the table's parameters and FLOPs are for it)
    metric: str
    reference: str  # published figures of the implementations this entry replaces or matches
    target: str  # what a run of the recipe has to reach


COCO, VOC = ("COCO 2017", 80), ("VOC07+12", 20)

CARDS = {
    "ssd300_mobilenetv2": ModelCard(*COCO, COCO_BOX_MAP, "23.8 (MindSpore, 500 epochs)", ">= 24.5"),
    "ssd_mobilenetv1_fpn": ModelCard(*COCO, COCO_BOX_MAP, "29.1 (MindSpore table; TF OD API 29.1)", ">= 30.0"),
    "ssd_resnet50_fpn": ModelCard(*COCO, COCO_BOX_MAP,
                                  "34.3 (MindSpore table; TF OD API 34.3; torchvision RetinaNet R50 36.4)",
                                  ">= 35.0"),
    "ssd_vgg16": ModelCard(*COCO, COCO_BOX_MAP, "23.2 (MindSpore); torchvision ssd300_vgg16 25.1", ">= 25.5"),
    "ssdlite_mobilenetv2": ModelCard(*VOC, VOC07_MAP, "0.686 (pytorch-ssd mb2-ssd-lite)", ">= 0.690"),
    "faster_rcnn_r50_fpn_dcn": ModelCard(*COCO, COCO_BOX_MAP,
                                         "40.6 (MindSpore, 70 epochs); MMDetection mdconv c3-c5 1x 41.4",
                                         ">= 41.5 (1x, 12 epochs)"),
    "faster_rcnn_r50_fpn": ModelCard(*COCO, COCO_BOX_MAP,
                                     "torchvision 37.0; MMDetection 1x 37.4; Detectron2 1x 37.9",
                                     ">= 37.4 (1x, 12 epochs)"),
}


def model_card(name: str) -> ModelCard:
    if name not in CARDS:
        raise KeyError(f"zoo model '{name}' has no card in models/cards.py (dataset, reference, target)")
    return CARDS[name]
