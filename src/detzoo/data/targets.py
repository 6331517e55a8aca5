"""The ground truth of a batch, in the two forms detectors take, made once per batch by ``loader.Collate``.

- Padded tensors: ``boxes`` [N, G, 4], ``labels``, ``iscrowd``, ``difficult`` [N, G] and the validity mask
  ``valid`` [N, G], for losses computed on the whole batch at once (the SSD loss: no loop over images, no
  shape that depends on one image's objects). G is the batch's largest object count rounded up to a multiple
  of ``OBJECT_PAD``, so a run sees a handful of shapes, not one per count (compiled or graphed steps
  re-specialise per shape).
- One dict per image (``targets[i]``, iteration): views of the same tensors cut to the image's own objects,
  plus its metadata (image_id, index, orig_size, image_size, path), for torchvision's Faster R-CNN parts,
  which take lists, and for evaluation.

Padding is done in the DataLoader's workers and the whole batch moves to the device in five copies
(``to``), so the training step neither loops over images nor waits for a copy (``pin_memory``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

OBJECT_PAD = 8  # G is a multiple of this (at least OBJECT_PAD)
PER_OBJECT = ("boxes", "labels", "iscrowd", "difficult")
PADDING_LABEL = -1


def padded_object_count(count: int) -> int:
    return max(1, math.ceil(count / OBJECT_PAD)) * OBJECT_PAD


@dataclass
class Targets(Sequence):
    boxes: torch.Tensor  # float32 [N, G, 4], xyxy input pixels; 0 in padding
    labels: torch.Tensor  # int64 [N, G], 0..K-1; PADDING_LABEL in padding
    iscrowd: torch.Tensor  # bool [N, G]: COCO crowd regions
    difficult: torch.Tensor  # bool [N, G]: VOC difficult objects
    valid: torch.Tensor  # bool [N, G]: a real entry, not padding
    counts: list[int]  # objects (ignore regions included) per image, on the host
    meta: list[dict] = field(default_factory=list)  # per image: every other key of its target dict

    @classmethod
    def from_dicts(cls, targets: Sequence[dict]) -> Targets:
        """Pad per-image target dicts (boxes [M, 4], labels [M], optional iscrowd / difficult [M] and any
        metadata). A ``Targets`` is returned as it is."""
        if isinstance(targets, Targets):
            return targets
        counts = [len(t["boxes"]) if "boxes" in t else 0 for t in targets]
        size = len(targets), padded_object_count(max(counts, default=0))
        boxes = torch.zeros(*size, 4)
        labels = torch.full(size, PADDING_LABEL, dtype=torch.long)
        iscrowd = torch.zeros(size, dtype=torch.bool)
        difficult = torch.zeros(size, dtype=torch.bool)
        for i, (target, count) in enumerate(zip(targets, counts)):
            if count:
                boxes[i, :count] = torch.as_tensor(target["boxes"]).reshape(-1, 4)
                labels[i, :count] = torch.as_tensor(target["labels"])
                for key, padded in (("iscrowd", iscrowd), ("difficult", difficult)):
                    if target.get(key) is not None:
                        padded[i, :count] = torch.as_tensor(target[key]).bool()
        valid = torch.arange(size[1]) < torch.tensor(counts, dtype=torch.long).view(-1, 1)
        meta = [{k: v for k, v in t.items() if k not in PER_OBJECT} for t in targets]
        return cls(boxes, labels, iscrowd, difficult, valid, counts, meta)

    # ------------------------------------------------------------------ batch views

    @property
    def ignore(self) -> torch.Tensor:
        """bool [N, G]: ignore regions (crowd boxes and difficult objects), not objects to find."""
        return (self.iscrowd | self.difficult) & self.valid

    @property
    def objects(self) -> torch.Tensor:
        """bool [N, G]: the objects to find (valid and not an ignore region)."""
        return self.valid & ~(self.iscrowd | self.difficult)

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return self.boxes, self.labels, self.iscrowd, self.difficult, self.valid

    def _with(self, tensors, move) -> Targets:
        meta = [{k: move(v) if isinstance(v, torch.Tensor) else v for k, v in m.items()} for m in self.meta]
        return Targets(*tensors, counts=self.counts, meta=meta)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Targets:
        """On ``device`` (asynchronous from pinned memory with ``non_blocking``); itself when already there."""
        if self.boxes.device == torch.device(device) and not any(isinstance(v, torch.Tensor) for m in self.meta
                                                                 for v in m.values()):
            return self

        def move(tensor):
            return tensor.to(device, non_blocking=non_blocking)
        return self._with([move(t) for t in self._tensors()], move)

    def pin_memory(self) -> Targets:
        """Page-locked copies (the DataLoader's ``pin_memory=True`` calls this), so ``to(cuda,
        non_blocking=True)`` does not wait."""
        return self._with([t.pin_memory() for t in self._tensors()], lambda t: t.pin_memory())

    # ------------------------------------------------------------------ per-image views

    def __len__(self) -> int:
        return len(self.counts)

    def __getitem__(self, index: int) -> dict:
        """Image ``index``'s target dict: boxes [M, 4], labels, iscrowd, difficult [M] (views) + metadata."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"image {index} of a batch of {len(self)}")
        count = self.counts[index]
        views = {key: getattr(self, key)[index, :count] for key in PER_OBJECT}
        return {**self.meta[index], **views}

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(len(self)))
