"""SSD anchor matching for a whole batch at once: each anchor takes its highest-IoU ground truth when
IoU > threshold, and each ground truth is also forced onto its best anchor (the later ground truth wins an
anchor that several share).

Crowd boxes and VOC ``difficult`` objects are ignore regions: an anchor that is not positive but lies more than
the threshold inside one - intersection over the *anchor's* area (IoF), the rule of COCO's evaluation for crowd
regions and of MMDetection's ``ignore_iof_thr`` - is neither positive nor negative. IoU would not do: a crowd
box is large, so an anchor wholly inside it has a small IoU with it and would be trained as background on the
very objects the crowd box covers. A positive match to a real object wins over an ignore region.

The ground truth comes padded to [N, G] with a validity mask (``data.targets.Targets``); everything is a
fixed number of tensor operations on [N, G, A] whatever the batch holds - no loop over images, nothing that
makes the host wait for the device (no ``nonzero``, ``.item()``, or mask indexing), as Ultralytics'
``TaskAlignedAssigner`` works on ``gt_bboxes`` [b, max_num_obj, 4] with ``mask_gt``. The IoU is torchvision's
``box_iou`` formula computed here once per pair together with the IoF (``pairwise_overlaps``), so the values
are ``box_iou``'s, bit for bit.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_area

from ..data.targets import Targets

BACKGROUND = -1
IGNORE = -2


def ignore_regions(target: dict) -> torch.Tensor:
    """bool [G] on the boxes' device: the target's boxes that are ignore regions, not objects to find - COCO
    crowd boxes and VOC ``difficult`` objects (pytorch-ssd drops the latter, MMDetection ignores them, VOC
    evaluation never counts them)."""
    boxes = target["boxes"]
    ignore = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    for key in ("iscrowd", "difficult"):
        if target.get(key) is not None:
            ignore |= target[key].to(boxes.device).bool()
    return ignore


def pairwise_overlaps(boxes: torch.Tensor, anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, G, 4] boxes, [A, 4] anchors (xyxy) -> (IoU, intersection over the anchor's area), each [N, G, A].
    The IoU is torchvision ``box_iou``'s arithmetic, operation for operation."""
    top_left = torch.max(boxes[..., None, :2], anchors[:, :2])
    bottom_right = torch.min(boxes[..., None, 2:], anchors[:, 2:])
    sides = (bottom_right - top_left).clamp(min=0)
    inter = sides[..., 0] * sides[..., 1]
    anchor_area = box_area(anchors)
    union = box_area(boxes.flatten(0, 1)).view(boxes.shape[:2])[..., None] + anchor_area - inter
    iou = inter / union
    iof = inter / anchor_area.clamp(min=torch.finfo(anchors.dtype).tiny)
    return iou, iof


def match_anchors(anchors: torch.Tensor, targets: Targets, iou_threshold: float = 0.5) -> torch.Tensor:
    """-> [N, A]: the index (into G) of each anchor's ground truth, BACKGROUND (-1) or IGNORE (-2).
    ``targets`` on the anchors' device."""
    objects, ignore = targets.objects, targets.ignore  # [N, G]
    iou, iof = pairwise_overlaps(targets.boxes, anchors)
    iou = iou.masked_fill(~objects[..., None], -1.0)  # padding and ignore regions match nothing
    best_iou, best_object = iou.max(dim=1)  # [N, A]; the first of equal maxima, as box_iou(...).max(0)
    matches = torch.where(best_iou > iou_threshold, best_object, BACKGROUND)
    # every object forced onto its best anchor; of several objects sharing one, the last (scatter's amax of
    # their indices; padding and ignore regions offer -1)
    index = torch.arange(objects.shape[1], device=anchors.device).expand_as(objects)
    forced = torch.full_like(matches, -1).scatter_reduce_(1, iou.argmax(dim=2), torch.where(objects, index, -1),
                                                          reduce="amax")
    matches = torch.where(forced >= 0, forced, matches)
    inside = iof.masked_fill(~ignore[..., None], 0.0).amax(dim=1)  # [N, A]: the deepest ignore region
    return torch.where((matches == BACKGROUND) & (inside > iou_threshold), IGNORE, matches)
