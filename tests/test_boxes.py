"""Box coding, default boxes, matching."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou

from detzoo.data.targets import Targets
from detzoo.models import create_model
from detzoo.models.anchors import ssd300_mobilenetv2_anchors
from detzoo.models.box_coder import BoxCoder
from detzoo.models.matching import BACKGROUND, IGNORE
from detzoo.models.matching import match_anchors as match_batch


def match_anchors(anchors, gt, iou_threshold, ignore=None):
    """One image through the batched matching."""
    target = {"boxes": gt, "labels": torch.zeros(len(gt), dtype=torch.long), "iscrowd": ignore}
    return match_batch(anchors, Targets.from_dicts([target]), iou_threshold)[0]

coord = st.floats(0, 500, allow_nan=False)
size = st.floats(1, 300, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(coord, coord, size, size, coord, coord, size, size), min_size=1, max_size=20))
def test_box_coding_round_trip(rows):
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h, *_ in rows], dtype=torch.float64)
    anchors = torch.tensor([[x, y, x + w, y + h] for *_, x, y, w, h in rows], dtype=torch.float64)
    coder = BoxCoder()
    codes = coder.encode(boxes, anchors)
    # decode clamps extreme log-scales; stay inside that range
    if codes[:, 2:].abs().max() / 5 < math.log(1000 / 16):
        torch.testing.assert_close(coder.decode(codes, anchors), boxes, rtol=1e-6, atol=1e-6)


def test_box_coder_weights_are_ssd_variances():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes = torch.tensor([[1.0, 0.0, 11.0, 20.0]])
    codes = BoxCoder().encode(boxes, anchors)
    # centre shift 1/10 of the anchor / variance 0.1 = 1; height doubles: log 2 / 0.2
    torch.testing.assert_close(codes, torch.tensor([[1.0, 5.0, 0.0, math.log(2) * 5]]))


def test_decode_broadcasts_over_a_batch():
    anchors = torch.rand(7, 2) * 50
    anchors = torch.cat([anchors, anchors + 10], dim=1)
    codes = torch.randn(3, 7, 4)
    batched = BoxCoder().decode(codes, anchors)
    assert batched.shape == (3, 7, 4)
    torch.testing.assert_close(batched[1], BoxCoder().decode(codes[1], anchors))


def test_ssd300_mobilenetv2_has_1917_default_boxes():
    model = create_model("ssd300_mobilenetv2", num_classes=3)
    assert model.anchors.shape == (1917, 4)
    spec = ssd300_mobilenetv2_anchors()
    assert spec.num_anchors_per_location() == [3, 6, 6, 6, 6, 6]
    first = model.anchors[0]  # 0.1 x 300 = 30 px square centred at (0.5 / 19) x 300
    centre = 0.5 / 19 * 300
    torch.testing.assert_close(first, torch.tensor([centre - 15, centre - 15, centre + 15, centre + 15]))
    last = model.anchors[-1]  # 1x1 map: centred on the image
    assert torch.allclose((last[:2] + last[2:]) / 2, torch.tensor([150.0, 150.0]))


def test_matching_threshold_and_forced_match():
    anchors = torch.tensor([[0, 0, 10, 10], [0, 0, 20, 20], [50, 50, 60, 60], [100, 100, 110, 110.0]])
    gt = torch.tensor([[0, 0, 19, 19], [52, 52, 70, 70.0]])
    matches = match_anchors(anchors, gt, 0.5)
    assert matches[1] == 0  # IoU > 0.5
    assert matches[0] == BACKGROUND  # IoU 0.28
    # gt 1 overlaps nothing above 0.5 but is forced onto its best anchor
    best = box_iou(gt[1:], anchors).argmax()
    assert best == 2 and matches[2] == 1
    assert matches[3] == BACKGROUND


def test_crowd_boxes_are_ignored_not_negative():
    anchors = torch.tensor([[0, 0, 10, 10], [50, 50, 60, 60.0]])
    gt = torch.tensor([[0, 0, 10, 11], [50, 50, 61, 61.0]])
    matches = match_anchors(anchors, gt, 0.5, ignore=torch.tensor([False, True]))
    assert matches.tolist() == [0, IGNORE]


def test_ignore_regions_use_intersection_over_the_anchor():
    """An anchor wholly inside a large crowd box has a small IoU with it (0.04 here) but lies entirely in it:
    ignored (COCO's and MMDetection's IoF rule), not trained as background. A large anchor that covers a small
    ignore region whole but is mostly outside any (IoF 0.25) stays background; a positive match to a real
    object wins over an ignore region around it."""
    anchors = torch.tensor([[10, 10, 30, 30], [0, 0, 200, 200], [150, 150, 160, 160], [40, 40, 60, 60.0]])
    gt = torch.tensor([[0, 0, 100, 100], [150, 150, 170, 170], [40, 40, 60, 61.0]])
    ignore = torch.tensor([True, True, False])
    # IoU with the ignore regions is below 0.5 everywhere
    torch.testing.assert_close(box_iou(gt[:2], anchors[:3]).max(0).values, torch.tensor([0.04, 0.25, 0.25]))
    matches = match_anchors(anchors, gt, 0.5, ignore=ignore)
    assert matches.tolist() == [IGNORE, BACKGROUND, IGNORE, 2]
