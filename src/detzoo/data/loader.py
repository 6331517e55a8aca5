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
from .workers import BadSample, CheckedLoader, stop_workers_of


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
        # pixels, or a JPEG still to be decoded on the training device (device_decode.EncodedSample)
        return (image.as_subclass(torch.Tensor) if isinstance(image, torch.Tensor) else image), target

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
        """The batch in page-locked memory (the DataLoader's pin-memory thread calls this when
        ``pin_memory=True``), so that ``.to("cuda", non_blocking=True)`` is an asynchronous copy. Without this
        method torch's pinning passes an object it does not know through unchanged: every tensor field, and the
        tensors inside the targets and ``extra``, are pinned."""
        return dataclasses.replace(self, **{f.name: pinned(getattr(self, f.name)) for f in dataclasses.fields(self)})


def pinned(value):
    """Tensors (and what pins itself, as ``Targets``), and those inside dicts, lists and tuples, in page-locked
    memory; anything else as it is."""
    if callable(getattr(value, "pin_memory", None)):
        return value.pin_memory()
    if isinstance(value, dict):
        return {key: pinned(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(pinned(item) for item in value)
    return value


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


def init_worker(worker_id: int) -> None:
    """Every DataLoader worker: stop signals left to the main process (``ignore_stop_signals``), and one thread
    for torch and for OpenCV. A worker works on one sample at a time; a thread pool per worker only makes
    W workers x C cores of threads fight over the cores. torch's worker loop already sets one torch thread;
    OpenCV's setting is the process's own, so it is set here too, also for a worker started by ``spawn``,
    which inherits nothing (``TrainAugment`` sets it in the process that builds it)."""
    ignore_stop_signals(worker_id)
    torch.set_num_threads(1)
    import cv2  # the augmentation's colour steps; imported here so that inference-only users need not load it

    cv2.setNumThreads(1)


# Batches queued per worker on a GPU: at least this many batches in flight in all, so that a slow batch (a
# large image, a deep zoom-out) of one worker does not starve the GPU; with many workers torch's 2 each suffice.
BATCHES_IN_FLIGHT = 8


def prefetch_batches(workers: int, device: torch.device | str | None) -> int:
    """``prefetch_factor``: torch's 2 per worker on the CPU (the process that trains also decodes there: a
    longer queue only holds memory), and on a GPU enough for ``BATCHES_IN_FLIGHT`` batches in all."""
    if device is None or torch.device(device).type != "cuda":
        return 2
    return max(2, math.ceil(BATCHES_IN_FLIGHT / max(1, workers)))


def loader_kwargs(workers: int, device: torch.device | str | None = None, persistent: bool = False) -> dict:
    """DataLoader settings for ``workers`` processes feeding ``device``: batches in page-locked memory for a
    CUDA device (asynchronous copies), the queue depth of ``prefetch_batches``, ``init_worker``; ``persistent``
    keeps the workers from one epoch to the next (the training loader: re-forking them cost every epoch a
    pipeline fill, ``benchmarks/bench_train.py``)."""
    cuda = device is not None and torch.device(device).type == "cuda"
    kwargs: dict = {"num_workers": workers, "pin_memory": cuda}
    if workers > 0:
        kwargs.update(persistent_workers=persistent, prefetch_factor=prefetch_batches(workers, device),
                      worker_init_fn=init_worker)
    return kwargs


def train_loader(dataset: DetectionDataset, sampler: TrainBatchSampler, size_divisible: int,
                 workers: int, device: torch.device | str | None = None, decode_on_device: bool = False):
    """The training batches for ``device``. The workers persist across epochs: the batch sampler runs in this
    process and hands every sample its (seed, epoch, index) seed with its index, so a persistent worker
    augments exactly as a fresh one would, and ``sampler.set_epoch`` before each pass (with the batches to skip
    on resume) takes effect, since every pass asks the sampler anew. ``decode_on_device``: the workers hand on
    JPEG bytes and ``device`` decodes and augments them (``device_decode``; the dataset's transform must be an
    ``EncodedTrainAugment``). A ``CheckedLoader``: its workers are stopped on an error and at exit
    (``workers``), or by ``close_loader``."""
    if not decode_on_device:
        return CheckedLoader(dataset, batch_sampler=sampler, collate_fn=Collate(size_divisible),
                             **loader_kwargs(workers, device, persistent=True))
    from .device_decode import DeviceDecoder, DeviceDecodingLoader, EncodedCollate

    collate = EncodedCollate(size_divisible)
    loader = CheckedLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                           **loader_kwargs(workers, device, persistent=True))
    decoder = DeviceDecoder(device or "cpu", dataset.transform.augment.fill, collate, dataset.skip_bad)
    return DeviceDecodingLoader(loader, decoder)


def close_loader(loader) -> None:
    """Stop a loader's persistent workers now (they would otherwise live until the loader is garbage
    collected, or the exit handler of ``workers`` stops them)."""
    stop_workers_of(getattr(loader, "loader", loader))  # a DeviceDecodingLoader's DataLoader


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
                     rank: int = 0, world_size: int = 1, device: torch.device | str | None = None) -> CheckedLoader:
    """Batches of ``data`` resized for a model (no augmentation, ``InferenceBatchSampler``), for evaluation,
    prediction, precise BN, export checks and quantization calibration. With several processes each takes
    every ``world_size``-th image (no padding, so nothing is evaluated twice). ``device``: where the batches go
    (pinned memory for a GPU). One pass per loader, so its workers do not persist."""
    sampler = InferenceBatchSampler(data, preprocess, batch_size, rank, world_size)
    return CheckedLoader(DetectionDataset(data, eval_transform(preprocess)), batch_sampler=sampler,
                         collate_fn=Collate(preprocess.size_divisible), **loader_kwargs(workers, device))


def dataset_order(loader) -> list[int] | None:
    """The dataset indices an inference loader yields, in dataset order (None for other batch sources)."""
    sampler = getattr(loader, "batch_sampler", None)
    return sampler.order if isinstance(sampler, InferenceBatchSampler) else None
