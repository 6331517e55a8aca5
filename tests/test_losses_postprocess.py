"""SSD losses against torchvision, and vectorised post-processing against a per-class reference."""

import shutil
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder
from torchvision.models.detection.ssd import SSD
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, nms, sigmoid_focal_loss

from detzoo.common.config import AugmentConfig, DatasetSpec
from detzoo.data.formats import read_dataset
from detzoo.data.loader import DetectionDataset
from detzoo.data.transforms import train_transform
from detzoo.models import create_model
from detzoo.models.box_coder import BoxCoder
from detzoo.models.losses import SSDLoss
from detzoo.models.matching import IGNORE
from detzoo.models.postprocess import Postprocess


def _anchors(n: int = 60) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(n, 2, generator=g) * 200
    wh = torch.rand(n, 2, generator=g) * 80 + 10
    return torch.cat([xy, xy + wh], dim=1)


def test_focal_loss_equals_torchvision():
    anchors = _anchors()
    targets = [{"boxes": anchors[[3, 17]] + 1.0, "labels": torch.tensor([2, 0])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    logits = torch.randn(2, 60, 5)
    regression = torch.randn(2, 60, 4)
    loss = SSDLoss("focal", alpha=0.75, gamma=2.0)
    out = loss(regression, logits, anchors, targets)
    labels, box_targets = loss.match(anchors, targets)
    one_hot = torch.zeros(2, 60, 5)
    pos = labels >= 0
    one_hot[pos, labels[pos]] = 1
    num_pos = pos.sum()
    assert num_pos >= 2  # each ground truth is forced onto an anchor
    expected_cls = sigmoid_focal_loss(logits, one_hot, alpha=0.75, gamma=2.0, reduction="sum") / num_pos
    expected_box = F.smooth_l1_loss(regression[pos], box_targets[pos], beta=1.0, reduction="sum") / num_pos
    torch.testing.assert_close(out["loss_cls"], expected_cls)
    torch.testing.assert_close(out["loss_box"], expected_box)


def test_images_without_objects_are_legal():
    anchors = _anchors()
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    for kind, logits in (("focal", 5), ("softmax", 6)):
        out = SSDLoss(kind)(torch.randn(1, 60, 4, requires_grad=True), torch.randn(1, 60, logits), anchors,
                            targets)
        assert out["loss_box"] == 0 and torch.isfinite(out["loss_cls"])


def test_hard_negative_mining_keeps_three_negatives_per_positive():
    anchors = _anchors()
    targets = [{"boxes": anchors[[5]].clone(), "labels": torch.tensor([1])}]
    loss = SSDLoss("softmax", neg_pos_ratio=3)
    labels, _ = loss.match(anchors, targets)
    logits = torch.randn(1, 60, 4)
    ce = F.cross_entropy(logits[0], (labels[0] + 1).clamp(min=0), reduction="none")
    positive = labels[0] >= 0
    negatives = ce[labels[0] == -1].sort(descending=True).values[: 3 * int(positive.sum())]
    expected = (ce[positive].sum() + negatives.sum()) / positive.sum()
    out = loss(torch.zeros(1, 60, 4), logits, anchors, targets)
    torch.testing.assert_close(out["loss_cls"], expected)


def test_difficult_objects_are_ignore_regions_from_the_xml_to_the_loss(micro, tmp_path):
    """A VOC object marked difficult reaches the training target (through the SSD augmentation) and its
    anchors are ignored - neither positive nor background - in the loss; unmarked, the same object is a
    positive. pytorch-ssd drops such objects, MMDetection ignores them, VOC evaluation never counts them."""
    xml = sorted(micro.glob("train/*.xml"))[0]
    shutil.copy(xml.with_suffix(".jpg"), tmp_path)
    marked = xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1)
    (tmp_path / xml.name).write_text(marked)
    data = read_dataset(DatasetSpec(path=str(tmp_path), format="voc"))
    assert data.records[0].difficult.tolist() == [True]
    model = create_model("ssd300_mobilenetv2", num_classes=len(data.class_names))
    augment = AugmentConfig(photometric=0, zoom_out=0, iou_crop=False, flip=0)
    _, target = DetectionDataset(data, train_transform(model.preprocess, augment))[0]
    assert target["difficult"].tolist() == [True]
    labels, _ = model.loss.match(model.anchors, [target])
    assert (labels >= 0).sum() == 0 and (labels == IGNORE).sum() > 0
    plain = dict(target, difficult=torch.tensor([False]))
    labels, _ = model.loss.match(model.anchors, [plain])
    assert (labels >= 0).sum() > 0 and (labels == IGNORE).sum() == 0


def _per_class_reference(regression, scores, anchors, image_size, thresh, iou, limit):
    """The textbook loop: per class, threshold, decode, NMS; then merge and keep the best ``limit``."""
    boxes = BoxCoder().decode(regression, anchors)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image_size[1])
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image_size[0])
    out_boxes, out_scores, out_labels = [], [], []
    for k in range(scores.shape[1]):
        keep = scores[:, k] > thresh
        b, s = boxes[keep], scores[keep, k]
        kept = nms(b, s, iou)
        out_boxes.append(b[kept])
        out_scores.append(s[kept])
        out_labels.append(torch.full((len(kept),), k))
    s = torch.cat(out_scores)
    order = s.argsort(descending=True)[:limit]
    return torch.cat(out_boxes)[order], s[order], torch.cat(out_labels)[order]


def test_vectorised_postprocess_matches_per_class_loop():
    torch.manual_seed(0)
    anchors = _anchors(300)
    for _ in range(5):
        regression = torch.randn(2, 300, 4) * 0.5
        logits = torch.randn(2, 300, 6) * 2 - 2  # a realistic spread: most scores low, some high
        post = Postprocess("focal", score_thresh=0.05, nms_thresh=0.6, pre_nms_top_k=300 * 6,
                           detections_per_img=100)
        results = post(regression, logits, anchors, [(240, 320), (240, 320)])
        for i, result in enumerate(results):
            boxes, scores, labels = _per_class_reference(regression[i], logits[i].sigmoid(), anchors,
                                                         (240, 320), 0.05, 0.6, 100)
            torch.testing.assert_close(result["scores"], scores)
            torch.testing.assert_close(result["boxes"], boxes)
            assert torch.equal(result["labels"], labels)


def test_postprocess_caps_detections_and_respects_threshold():
    anchors = _anchors(300)
    logits = torch.full((1, 300, 3), 5.0)
    post = Postprocess("focal", score_thresh=0.5, nms_thresh=0.99, pre_nms_top_k=50, detections_per_img=20)
    (result,) = post(torch.zeros(1, 300, 4), logits, anchors, [(300, 300)])
    assert len(result["scores"]) <= 20
    assert (result["scores"] > 0.5).all()
    (empty,) = post(torch.zeros(1, 300, 4), torch.full((1, 300, 3), -9.0), anchors, [(300, 300)])
    assert empty["boxes"].shape == (0, 4)


def test_softmax_scores_drop_the_background_column():
    anchors = _anchors(10)
    logits = torch.zeros(1, 10, 3)
    logits[0, 4, 2] = 10.0  # anchor 4 is class 1 (column 0 is background)
    post = Postprocess("softmax", score_thresh=0.5)
    (result,) = post(torch.zeros(1, 10, 4), logits, anchors, [(300, 300)])
    assert result["labels"].tolist() == [1]
    expected = BoxCoder().decode(torch.zeros(1, 4), anchors[4:5]).clamp(0, 300)
    torch.testing.assert_close(result["boxes"], expected)
    assert box_iou(result["boxes"], anchors[4:5].clamp(0, 300)).item() > 0.99
    assert batched_nms is not None


def test_in_graph_selection_equals_select():
    """The exportable selection (top-k per class, shifted boxes, ONNX-style NMS) keeps exactly what ``select``
    keeps, with the per-class cap far (400) and close (12 of 300 anchors) to binding."""
    torch.manual_seed(1)
    anchors = _anchors(300)
    for top_k in (400, 12):
        post = Postprocess("focal", score_thresh=0.05, nms_thresh=0.5, pre_nms_top_k=top_k, detections_per_img=50)
        regression = torch.randn(3, 300, 4) * 0.5
        logits = torch.randn(3, 300, 6) * 2 - 2
        logits[1] = -20.0  # an image without detections
        boxes, scores = post.decode(regression, logits, anchors)
        expected = post.select(boxes, scores, [(240, 320)] * 3)
        image, out_boxes, out_scores, labels = post.select_in_graph(boxes, scores, (240, 320))
        assert image.tolist() == sorted(image.tolist()) and (image == 1).sum() == 0
        for i, want in enumerate(expected):
            mine = image == i
            assert 0 < len(want["scores"]) <= 50 or i == 1
            torch.testing.assert_close(out_scores[mine], want["scores"])
            torch.testing.assert_close(out_boxes[mine], want["boxes"])
            assert torch.equal(labels[mine], want["labels"])


def test_pre_nms_candidates_are_capped_per_class():
    """A crowded class does not starve the others before NMS: 200 well-separated objects of class 0 score
    0.9, three of class 1 score 0.6. With 50 candidates per class both classes reach NMS (a global cap of 50
    would keep class 0 only)."""
    side = torch.arange(15.0) * 20
    grid = torch.stack(torch.meshgrid(side, side, indexing="ij"), -1).reshape(-1, 2)[:203]
    anchors = torch.cat([grid, grid + 10], dim=1)  # 203 disjoint 10-px boxes
    logits = torch.full((1, 203, 2), -9.0)
    logits[0, :200, 0] = 2.2  # sigmoid 0.90
    logits[0, 200:, 1] = 0.4  # sigmoid 0.60
    post = Postprocess("focal", score_thresh=0.05, nms_thresh=0.5, pre_nms_top_k=50, detections_per_img=100)
    (result,) = post(torch.zeros(1, 203, 4), logits, anchors, [(300, 300)])
    assert (result["labels"] == 0).sum() == 50 and (result["labels"] == 1).sum() == 3


def _selection_over_everything(boxes, scores, image_size, thresh, top_k, iou, limit):
    """The selection without shortcuts: per class (a loop), threshold and the best ``top_k``; one
    ``batched_nms`` over all of them; the best ``limit``."""
    boxes = clip_boxes_to_image(boxes, image_size)
    kept_boxes, kept_scores, kept_labels = [], [], []
    for k in range(scores.shape[1]):
        index = (scores[:, k] > thresh).nonzero().squeeze(1)
        index = index[scores[index, k].topk(min(top_k, len(index))).indices]
        kept_boxes.append(boxes[index])
        kept_scores.append(scores[index, k])
        kept_labels.append(torch.full((len(index),), k))
    kept_boxes, kept_scores, kept_labels = torch.cat(kept_boxes), torch.cat(kept_scores), torch.cat(kept_labels)
    keep = batched_nms(kept_boxes, kept_scores, kept_labels, iou)[:limit]
    return kept_boxes[keep], kept_scores[keep], kept_labels[keep]


def test_selection_decided_by_the_best_candidates_first_is_exact():
    """``select_image`` looks at the best 1000 candidates first and widens only while fewer than the cap
    survive; it equals the selection over every candidate when the first round settles it (scattered boxes:
    973 of the best 1000 survive NMS), when heavy suppression needs a second round (boxes piled on one place:
    71 of the best 1000 survive, 72 of all 6000 pairs; cap 72), when fewer than the cap survive at all, and
    with the per-class cap binding (150 of ~1900 per class)."""
    cases = ((600.0, 100, 400, True), (10.0, 72, 400, False), (10.0, 100, 400, False), (10.0, 50, 150, True),
             (10.0, 60, 150, False))
    for spread, limit, top_k, first_round_settles in cases:
        g = torch.Generator().manual_seed(3)
        xy = torch.rand(2000, 2, generator=g) * spread
        boxes = torch.cat([xy, xy + torch.rand(2000, 2, generator=g) * 40 + 10], dim=1)
        scores = torch.rand(2000, 3, generator=g)
        post = Postprocess("focal", score_thresh=0.05, nms_thresh=0.5, pre_nms_top_k=top_k, detections_per_img=limit)
        result = post.select_image(boxes, scores, (640, 640))
        expected = _selection_over_everything(boxes, scores, (640, 640), 0.05, top_k, 0.5, limit)
        assert torch.equal(result["boxes"], expected[0]) and torch.equal(result["scores"], expected[1])
        assert torch.equal(result["labels"], expected[2])
        first = Postprocess("focal", score_thresh=scores.flatten().topk(1000).values[-1].item() - 1e-7,
                            nms_thresh=0.5, pre_nms_top_k=top_k, detections_per_img=limit)
        assert (len(first.select_image(boxes, scores, (640, 640))["scores"]) >= limit) == first_round_settles


def test_selection_equals_torchvision_ssd_postprocessing():
    """torchvision's ``SSD.postprocess_detections`` (softmax, per class: threshold, top ``topk_candidates``,
    then one ``batched_nms`` and the per-image cap) keeps what ours keeps, with the per-class cap binding."""
    torch.manual_seed(2)
    anchors = _anchors(300)
    regression = torch.randn(2, 300, 4) * 0.5
    logits = torch.randn(2, 300, 5) * 2
    logits[..., 0] += 1.0  # background ahead, as after training
    ours = Postprocess("softmax", score_thresh=0.05, nms_thresh=0.45, pre_nms_top_k=15, detections_per_img=30)
    reference = SimpleNamespace(box_coder=TorchvisionBoxCoder(weights=(10.0, 10.0, 5.0, 5.0)), score_thresh=0.05,
                                topk_candidates=15, nms_thresh=0.45, detections_per_img=30)
    expected = SSD.postprocess_detections(reference, {"bbox_regression": regression, "cls_logits": logits},
                                          [anchors, anchors], [(240, 320)] * 2)
    for mine, theirs in zip(ours(regression, logits, anchors, [(240, 320)] * 2), expected):
        assert len(mine["scores"]) == 30 and len(set(theirs["labels"].tolist())) == 4
        torch.testing.assert_close(mine["scores"], theirs["scores"])
        torch.testing.assert_close(mine["boxes"], theirs["boxes"])
        assert torch.equal(mine["labels"], theirs["labels"] - 1)
