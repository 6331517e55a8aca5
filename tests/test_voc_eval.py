"""VOC07 mAP@0.5 (11-point and area) against a case computed by hand."""

from pathlib import Path

import numpy as np
import pytest
import torch

from detzoo.common.structures import Detections
from detzoo.data.records import DetectionData, make_record
from detzoo.evaluation import build_evaluator
from detzoo.evaluation.voc import VOCEvaluator, average_precision

CLASSES = ["a", "b", "c"]
A1, A2, A3, B1 = [10, 10, 50, 50], [60, 60, 90, 90], [0, 0, 40, 40], [50, 0, 90, 40]


def _data() -> DetectionData:
    """image 0: a (A1), a (A2, difficult); image 1: a (A3), b (B1). Class c has no ground truth."""
    records = [make_record(Path("0.jpg"), 100, 100, [A1, A2], [0, 0], "0.xml", 0, difficult=[False, True]),
               make_record(Path("1.jpg"), 100, 100, [A3, B1], [0, 1], "1.xml", 1)]
    return DetectionData(records, CLASSES, "hand-made", "voc")


def _detections() -> list[Detections]:
    image0 = [  # (box, score, label)
        (A1, 0.9, 0),  # a: true positive (A1)
        ([12, 12, 50, 50], 0.8, 0),  # a: A1 again (IoU 0.9) -> false positive
        (A2, 0.7, 0),  # a: the difficult A2 -> ignored
        ([55, 5, 95, 45], 0.35, 1),  # b: no b in image 0 -> false positive
        (A1, 0.2, 2),  # c: no ground truth anywhere
    ]
    image1 = [
        ([60, 60, 99, 99], 0.6, 0),  # a: overlaps nothing -> false positive
        ([0, 0, 40, 41], 0.5, 0),  # a: A3 (IoU 0.976) -> true positive
        ([50, 0, 90, 17], 0.4, 1),  # b: IoU 0.425 with B1 -> false positive
        (B1, 0.3, 1),  # b: true positive
    ]
    out = []
    for image_id, rows in enumerate([image0, image1]):
        boxes, scores, labels = zip(*rows)
        out.append(Detections(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores),
                              torch.tensor(labels), CLASSES, image_id))
    return out


# Class a, 2 positives (A2 is difficult): in score order TP, FP, (ignored), FP, TP
#   recall 1/2, 1/2, 1/2, 2/2; precision 1, 1/2, 1/3, 1/2.
#   11-point: recall >= 0 .. 0.5 (6 points) max precision 1; 0.6 .. 1.0 (5 points) 1/2 -> (6 + 2.5) / 11.
#   area: 0.5 x 1 + 0.5 x 1/2 = 0.75.
# Class b, 1 positive: FP, FP, TP -> recall 0, 0, 1; precision 0, 0, 1/3 -> 1/3 by either method.
# Class c has no ground truth: n/a, left out of the mean.
AP_A_11, AP_A_AREA, AP_B = 8.5 / 11, 0.75, 1 / 3


@pytest.mark.parametrize("metric", ["voc07", "voc07_area"])
def test_voc_map_equals_the_hand_computed_case(metric):
    evaluator = build_evaluator(metric, _data(), iou_thresh=0.5)
    assert isinstance(evaluator, VOCEvaluator)
    evaluator.process(_detections())
    result = evaluator.evaluate()
    ap_a = AP_A_11 if metric == "voc07" else AP_A_AREA
    assert result.per_class["a"] == pytest.approx(ap_a)
    assert result.per_class["b"] == pytest.approx(AP_B)
    assert np.isnan(result.per_class["c"])
    assert result.score == pytest.approx((ap_a + AP_B) / 2)
    assert result.metrics["mAP_11point"] == pytest.approx((AP_A_11 + AP_B) / 2)
    assert result.metrics["mAP_area"] == pytest.approx((AP_A_AREA + AP_B) / 2)
    assert result.primary == "mAP"
    lines = result.report.splitlines()
    assert lines[0].startswith("class") and "AP@0.5" in lines[0]
    assert any(line.split() == ["c", "n/a"] for line in lines)
    assert f"VOC mAP@0.5 {result.score:.4f}" in result.report and "2 classes with ground truth" in result.report


def test_stricter_iou_threshold_turns_loose_matches_into_false_positives():
    evaluator = VOCEvaluator(_data(), use_11_point=False, iou_thresh=0.95)
    evaluator.process(_detections())
    # class a at IoU > 0.95: TP (A1 exact), FP (IoU 0.9), ignored (A2), FP, TP (A3, IoU 0.976)
    assert evaluator.evaluate().per_class["a"] == pytest.approx(AP_A_AREA)
    evaluator = VOCEvaluator(_data(), use_11_point=False, iou_thresh=0.98)
    evaluator.process(_detections())
    # now A3's detection misses too: TP, FP, FP, FP -> recall 1/2 at precision 1 -> 0.5
    assert evaluator.evaluate().per_class["a"] == pytest.approx(0.5)


def test_average_precision_edge_cases():
    assert average_precision(np.array([]), np.array([]), use_11_point=True) == 0.0
    assert average_precision(np.array([]), np.array([]), use_11_point=False) == 0.0
    perfect = (np.array([0.5, 1.0]), np.array([1.0, 1.0]))
    assert average_precision(*perfect, use_11_point=True) == pytest.approx(1.0)
    assert average_precision(*perfect, use_11_point=False) == pytest.approx(1.0)


def test_detections_of_unknown_images_are_an_error():
    evaluator = VOCEvaluator(_data())
    evaluator.process([Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), CLASSES, 7)])
    with pytest.raises(ValueError, match="image_id 7"):
        evaluator.evaluate()
