"""Dataset, sampler and collate: records -> batches of uint8 images + targets.

Augmentation randomness is a pure function of (seed, epoch, sample index): the batch sampler hands each
index its own seed. The same sample is augmented the same way whatever the worker count, after a resume
in the middle of an epoch, and across any number of DDP processes. The batch sampler is written here
because it must also shard across processes, group by aspect ratio and skip already-seen batches.
"""

from __future__ import annotations

import dataclasses
import math
import random
import signal
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info
from torchvision import tv_tensors

from .image_files import decode_rgb as decode_rgb  # re-exported: its former home
from .image_files import read_image as read_image
from .records import DataError, DetectionData, ImageRecord
from .targets import Targets
from .transforms import Preprocess, eval_transform
from .workers import BadSample, CheckedLoader


def record_target(record: ImageRecord) -> dict[str, torch.Tensor]:
    """The training target of a record: boxes, labels and the two kinds of ignore region (crowd, difficult)."""
    return {"boxes": torch.from_numpy(record.boxes), "labels": torch.from_numpy(record.labels),
            "iscrowd": torch.from_numpy(record.iscrowd), "difficult": torch.from_numpy(record.difficult)}


class DetectionDataset(Dataset):
    """Item ``i`` or ``(i, seed)`` -> (uint8 image [3,H,W], target) after the transform; ``None`` for a
    bad sample when ``skip_bad`` is set (the collate counts those). A bad sample otherwise raises its DataError,
    except in a DataLoader worker: there it is returned as a ``workers.BadSample``, which ``Collate`` and
    ``workers.CheckedLoader`` (the loaders below) raise in the main process in the same words."""

    def __init__(self, data: DetectionData, transform, skip_bad: bool = False):
        self.data = data
        self.transform = transform
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.data.records)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        record = self.data.records[index]
        try:
            if getattr(self.transform, "reads_images", False):  # decodes at the scale it needs (augment.py)
                image, target = self.transform(record, record_target(record), seed)
            else:
                image, target = self._transformed(read_image(record), record_target(record), seed)
        except DataError as exc:
            if self.skip_bad:
                return None
            if get_worker_info() is not None:  # raised here, it would reach the user inside the worker's traceback
                return BadSample(str(exc))
            raise
        target["boxes"] = target["boxes"].float()
        target["image_id"] = record.image_id
        target["index"] = index
        target["orig_size"] = (record.height, record.width)
        target["image_size"] = tuple(image.shape[-2:])  # (h, w) after the transform, before batch padding
        target["path"] = str(record.path)
        return image.as_subclass(torch.Tensor), target

    def _transformed(self, image: torch.Tensor, target: dict, seed: int | None) -> tuple[torch.Tensor, dict]:
        """A torchvision ``transforms.v2`` transform on a decoded image, its randomness seeded by ``seed``."""
        height, width = image.shape[-2:]
        target["boxes"] = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(height, width))
        image = tv_tensors.Image(image)
        if seed is None:
            image, target = self.transform(image, target)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                image, target = self.transform(image, target)
        return image, {k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for k, v in target.items()}


@dataclass
class Batch:
    images: torch.Tensor  # uint8 [N,3,H,W], padded (normalize with image_sizes makes the padding 0)
    targets: Targets  # padded tensors for batched losses, and one dict per image (a list of dicts is padded)
    image_sizes: list[tuple[int, int]]  # (h, w) of each image before padding
    skipped: int = 0  # bad samples dropped from this batch (skip_bad)
    error: str | None = None  # a bad sample met in a worker: CheckedLoader raises it as a DataError
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.targets = Targets.from_dicts(self.targets)

    def __len__(self) -> int:
        return len(self.targets)

    def pin_memory(self) -> Batch:
        """Page-locked images and targets (the DataLoader's ``pin_memory=True`` calls this; a dataclass it
        does not know would stay pageable, and a copy from pageable memory to a GPU waits for the GPU)."""
        return dataclasses.replace(self, images=self.images.pin_memory(), targets=self.targets.pin_memory())


def padded_side(side: int, size_divisible: int) -> int:
    """A side length rounded up to a multiple of ``size_divisible`` (how batches are padded)."""
    return math.ceil(side / size_divisible) * size_divisible


class Collate:
    """Pad images to the largest in the batch (rounded up to ``size_divisible``) and stack them; pad the targets
    to the batch's largest object count (``targets.Targets``). The model sees the image padding as 0 after
    ``transforms.normalize(images, preprocess, batch.image_sizes)``."""

    def __init__(self, size_divisible: int = 1):
        self.size_divisible = size_divisible

    def __call__(self, samples: list) -> Batch:
        bad = next((s for s in samples if isinstance(s, BadSample)), None)
        if bad is not None:
            return Batch(torch.zeros(0, 3, 1, 1, dtype=torch.uint8), [], [], error=bad.message)
        good = [s for s in samples if s is not None]
        skipped = len(samples) - len(good)
        if not good:
            return Batch(torch.zeros(0, 3, 1, 1, dtype=torch.uint8), [], [], skipped)
        height = padded_side(max(img.shape[-2] for img, _ in good), self.size_divisible)
        width = padded_side(max(img.shape[-1] for img, _ in good), self.size_divisible)
        images = torch.zeros(len(good), 3, height, width, dtype=torch.uint8)
        for i, (img, _) in enumerate(good):
            images[i, :, : img.shape[-2], : img.shape[-1]] = img
        return Batch(images, [t for _, t in good], [tuple(img.shape[-2:]) for img, _ in good], skipped)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class TrainBatchSampler(Sampler):
    """Shuffled batches, a new order each epoch from (seed, epoch), sharded over ``world_size`` processes
    (every process gets the same number of batches), optionally grouped by aspect ratio (images wider than
    tall batched together), able to skip the first ``skip`` batches after a resume."""

    def __init__(self, data: DetectionData, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 group_aspect: bool = False, drop_last: bool = True):
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.group_aspect = group_aspect
        self.drop_last = drop_last
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _global_batches(self) -> list[list[int]]:
        order = list(range(len(self.data)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        if not self.group_aspect:
            groups = [order]
        else:
            wide = [i for i in order if self.data.records[i].width >= self.data.records[i].height]
            tall = [i for i in order if self.data.records[i].width < self.data.records[i].height]
            groups = [wide, tall]
        batches = []
        for group in groups:
            for start in range(0, len(group), self.batch_size):
                batch = group[start: start + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.group_aspect:
            random.Random(self.seed * 7_919 + self.epoch).shuffle(batches)
        return batches

    def _my_batches(self) -> list[list[int]]:
        batches = self._global_batches()
        per_rank = len(batches) // self.world_size if self.drop_last else math.ceil(len(batches) / self.world_size)
        if not self.drop_last and batches:
            batches += batches[: per_rank * self.world_size - len(batches)]
        return batches[self.rank: per_rank * self.world_size: self.world_size]

    def __len__(self) -> int:
        return len(self._my_batches())

    def __iter__(self):
        for batch in self._my_batches()[self.skip:]:
            yield [(i, sample_seed(self.seed, self.epoch, i)) for i in batch]


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process, which finishes its step, saves and
    then shuts them down; killed first, they would make that last step fail (Ctrl-C and SLURM signal
    every process of the job). They still exit when the main process dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def loader_kwargs(workers: int) -> dict:
    return {"num_workers": workers, "persistent_workers": False, "pin_memory": torch.cuda.is_available(),
            **({"prefetch_factor": 2, "worker_init_fn": ignore_stop_signals} if workers > 0 else {})}


def train_loader(dataset: DetectionDataset, sampler: TrainBatchSampler, size_divisible: int,
                 workers: int) -> CheckedLoader:
    return CheckedLoader(dataset, batch_sampler=sampler, collate_fn=Collate(size_divisible),
                         **loader_kwargs(workers))


def padded_size(height: int, width: int, preprocess: Preprocess) -> tuple[int, int]:
    """The (height, width) an image of this size has in an inference batch: resized, then padded."""
    height, width = preprocess.output_size(height, width)
    return padded_side(height, preprocess.size_divisible), padded_side(width, preprocess.size_divisible)


class InferenceBatchSampler(Sampler):
    """Unaugmented batches of this process's share of ``data`` (images rank, rank + W, ...; ``order``, in
    dataset order). Stretch-resized images all have the model's size: consecutive batches. Keep-aspect images
    are batched only with images of the same padded size (portrait and landscape never meet, nor two padded
    widths), so every image is padded exactly as it would be alone and its detections do not depend on which
    images share its batch; torchvision's and detectron2's evaluation (one image per batch) pad the same way.
    Batches come in the order of their first image, so results need little holding back to be put in order
    (``run_inference`` does)."""

    def __init__(self, data: DetectionData, preprocess: Preprocess, batch_size: int, rank: int = 0,
                 world_size: int = 1):
        self.order = list(range(rank, len(data), world_size))
        groups: dict[tuple[int, int], list[int]] = {}
        for index in self.order:
            groups.setdefault(self._padded_size(data.records[index], preprocess), []).append(index)
        self.batches = sorted((group[start: start + batch_size] for group in groups.values()
                               for start in range(0, len(group), batch_size)), key=lambda batch: batch[0])

    @staticmethod
    def _padded_size(record: ImageRecord, preprocess: Preprocess) -> tuple[int, int]:
        return padded_size(record.height, record.width, preprocess)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def inference_loader(data: DetectionData, preprocess: Preprocess, batch_size: int, workers: int = 0,
                     rank: int = 0, world_size: int = 1) -> CheckedLoader:
    """Batches of ``data`` resized for a model (no augmentation, ``InferenceBatchSampler``), for evaluation,
    prediction, precise BN, export checks and quantization calibration. With several processes each takes
    every ``world_size``-th image (no padding, so nothing is evaluated twice)."""
    sampler = InferenceBatchSampler(data, preprocess, batch_size, rank, world_size)
    return CheckedLoader(DetectionDataset(data, eval_transform(preprocess)), batch_sampler=sampler,
                         collate_fn=Collate(preprocess.size_divisible), **loader_kwargs(workers))


def dataset_order(loader) -> list[int] | None:
    """The dataset indices an inference loader yields, in dataset order (None for other batch sources)."""
    sampler = getattr(loader, "batch_sampler", None)
    return sampler.order if isinstance(sampler, InferenceBatchSampler) else None
