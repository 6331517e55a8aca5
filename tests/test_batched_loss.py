"""The batched SSD matching and losses reproduce the per-image rule they replaced (tests/ssd_loss_oracle.py) on
random batches: ties, empty images, all-crowd images, boxes partly or wholly outside the image, several
objects sharing a best anchor. Labels and box targets must be identical; the losses may differ only by the
order in which float32 sums are taken."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ssd_loss_oracle as oracle
from detzoo.data.loader import Collate
from detzoo.data.targets import OBJECT_PAD, PADDING_LABEL, Targets
from detzoo.models.losses import SSDLoss

IMAGE = 100.0  # the image is [0, 100] x [0, 100]; boxes reach from -60 to 160
CLASSES = 3


def _anchors() -> torch.Tensor:
    """A 10 px grid of 10, 20 and 40 px squares over the image, plus exact copies of a few (anchors with equal
    IoU with every box: ties for each box's best anchor)."""
    centres = torch.arange(5.0, IMAGE, 10.0)
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    grid = []
    for side in (10.0, 20.0, 40.0):
        half = side / 2
        grid.append(torch.stack([cx - half, cy - half, cx + half, cy + half], dim=-1).reshape(-1, 4))
    anchors = torch.cat(grid)
    return torch.cat([anchors, anchors[::37]])


ANCHORS = _anchors()
coordinate = st.floats(-60.0, 160.0, width=32)
side = st.floats(0.5, 120.0, width=32)
free_box = st.tuples(coordinate, coordinate, side, side).map(lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]])
anchor_box = st.integers(0, len(ANCHORS) - 1).map(lambda i: ANCHORS[i].tolist())  # IoU 1 with an anchor
obj = st.tuples(st.one_of(free_box, anchor_box), st.integers(0, CLASSES - 1), st.booleans(), st.booleans(),
                st.integers(0, 3))


@st.composite
def image_targets(draw) -> dict:
    """0-12 objects; some repeated (objects that share every anchor), some crowd, difficult or both, with
    weights that make all-crowd and empty images common."""
    objects = draw(st.lists(obj, max_size=12))
    all_ignored = draw(st.integers(0, 4)) == 0
    boxes, labels, crowd, difficult = [], [], [], []
    for box, label, is_crowd, is_difficult, repeats in objects:
        for _ in range(1 + (repeats == 3) * 2):  # a quarter of the objects three times
            boxes.append(box)
            labels.append(label)
            crowd.append(is_crowd or all_ignored)
            difficult.append(is_difficult and draw(st.booleans()))
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels,
            dtype=torch.long), "iscrowd": torch.tensor(crowd, dtype=torch.bool),
            "difficult": torch.tensor(difficult, dtype=torch.bool)}


batches = st.lists(image_targets(), min_size=1, max_size=5)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches, st.integers(0, 2**31 - 1))
def test_batched_matching_and_losses_equal_the_per_image_rule(targets, seed):
    for kind, logits_per_anchor in (("focal", CLASSES), ("softmax", CLASSES + 1)):
        loss = SSDLoss(kind)
        labels, box_targets = loss.match(ANCHORS, targets)
        expected_labels, expected_box_targets = oracle.match(ANCHORS, targets)
        assert torch.equal(labels, expected_labels)
        assert torch.equal(box_targets, expected_box_targets)

        generator = torch.Generator().manual_seed(seed)
        shape = (len(targets), len(ANCHORS))
        regression = torch.randn(*shape, 4, generator=generator)
        logits = torch.randn(*shape, logits_per_anchor, generator=generator)
        ours_in = [regression.clone().requires_grad_(), logits.clone().requires_grad_()]
        theirs_in = [regression.clone().requires_grad_(), logits.clone().requires_grad_()]
        ours = loss(*ours_in, ANCHORS, targets)
        theirs = oracle.losses(kind, *theirs_in, ANCHORS, targets)
        # Every term is >= 0, so each float32 sum is within (number of additions, at most log2 of ~10^4
        # terms deep in a pairwise sum ~ 14) x eps32 (1.2e-7) ~ 2e-6 of the exact sum, whatever the order;
        # two such sums differ by at most twice that: 1e-5 relative leaves room, 1e-7 absolute covers 0.
        for key in ("loss_box", "loss_cls"):
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-7, msg=f"{kind} {key}")
        # gradients are per anchor (no sums across anchors): equal up to the last bits of each term
        sum(ours.values()).backward()
        sum(theirs.values()).backward()
        for mine, reference in zip(ours_in, theirs_in):
            torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-5, atol=1e-7)


def test_the_collate_pads_targets_once_per_batch_and_keeps_per_image_views():
    """What Collate hands the step: padded tensors with a validity mask (G a multiple of OBJECT_PAD), and
    per-image dicts - views cut to each image's objects, with its metadata - for Faster R-CNN."""
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    first = {"boxes": torch.tensor([[1.0, 1, 4, 4], [2, 2, 6, 7]]), "labels": torch.tensor([2, 0]),
             "iscrowd": torch.tensor([False, True]), "difficult": torch.tensor([False, False]), "image_id": 7,
             "image_size": (8, 8)}
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
             "iscrowd": torch.zeros(0, dtype=torch.bool), "difficult": torch.zeros(0, dtype=torch.bool),
             "image_id": 9, "image_size": (8, 8)}
    batch = Collate()([(image, first), (image, empty)])
    targets = batch.targets
    assert isinstance(targets, Targets) and len(batch) == len(targets) == 2
    assert targets.boxes.shape == (2, OBJECT_PAD, 4) and targets.counts == [2, 0]
    assert targets.valid.tolist() == [[True, True] + [False] * (OBJECT_PAD - 2), [False] * OBJECT_PAD]
    assert targets.labels[0, :3].tolist() == [2, 0, PADDING_LABEL]
    assert targets.objects[0, :2].tolist() == [True, False] and targets.ignore[0, :2].tolist() == [False, True]
    views = list(targets)
    assert views[0]["image_id"] == 7 and torch.equal(views[0]["boxes"], first["boxes"])
    assert views[0]["boxes"].data_ptr() == targets.boxes.data_ptr()  # a view, not a copy
    assert views[1]["boxes"].shape == (0, 4) and views[1]["image_id"] == 9
    assert targets.to("cpu") is targets  # already there: nothing is copied
    padded = Targets.from_dicts([dict(first, boxes=first["boxes"].repeat(5, 1), labels=first["labels"].repeat(5),
                                      iscrowd=first["iscrowd"].repeat(5), difficult=first["difficult"].repeat(5))])
    assert padded.boxes.shape[1] == 2 * OBJECT_PAD  # 10 objects -> 16
