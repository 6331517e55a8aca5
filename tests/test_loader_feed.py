"""A loader that keeps a GPU fed (issue 16, item 3): persistent, single-threaded workers that augment exactly
as fresh ones; batches pinned for a GPU; JPEGs decoded and augmented on the training device
(``data.decode=cuda``), exercised here through the same path on the CPU."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from detzoo.common.config import AugmentConfig, DatasetSpec
from detzoo.common.errors import ConfigError
from detzoo.data import loader as loader_module
from detzoo.data.device_decode import EncodedSample, EncodedTrainAugment
from detzoo.data.formats import read_dataset
from detzoo.data.loader import (
    Batch,
    DetectionDataset,
    TrainBatchSampler,
    loader_kwargs,
    prefetch_batches,
    read_image,
    record_target,
    sample_seed,
    train_loader,
)
from detzoo.data.records import DataError, DetectionData, ImageRecord
from detzoo.data.transforms import Preprocess, train_transform

GEOMETRY_ONLY = AugmentConfig(photometric=0.0)


@pytest.fixture(scope="module")
def coco16(coco128) -> DetectionData:
    data = read_dataset(DatasetSpec(str(coco128)))
    data.records = data.records[:16]
    return data


def device_loader(data, augment: AugmentConfig, seed: int = 3, skip_bad: bool = False, workers: int = 0):
    transform = train_transform(Preprocess((96, 96)), augment)
    dataset = DetectionDataset(data, EncodedTrainAugment(transform), skip_bad)
    return transform, train_loader(dataset, TrainBatchSampler(data, 4, seed=seed), 1, workers, "cpu",
                                   decode_on_device=True)


def reference(transform, data, index: int, seed: int):
    """The worker path's augmentation of the same sample from the whole decoded image (what the device path
    decodes: no reduced DCT scale)."""
    record = data.records[index]
    return transform.from_pixels(read_image(record), record_target(record), sample_seed(seed, 0, index))


def test_device_decoding_gives_the_worker_augmentation(coco16):
    """Geometry only: the same boxes and the very same pixels (torchvision's JPEG decoder and Pillow's are both
    libjpeg-turbo with the same IDCT; the resize is the same uint8 kernel on the CPU)."""
    transform, loader = device_loader(coco16, GEOMETRY_ONLY)
    seen = 0
    for batch in loader:
        assert batch.images.dtype == torch.uint8 and batch.images.shape == (4, 3, 96, 96)
        for image, target in zip(batch.images, batch.targets):
            expected, expected_target = reference(transform, coco16, target["index"], 3)
            assert torch.equal(image, expected)
            assert torch.equal(target["boxes"], expected_target["boxes"])
            assert torch.equal(target["labels"], expected_target["labels"])
            seen += 1
    assert seen == 16


def test_device_decoding_distorts_colours_as_torchvision(coco16):
    """With the photometric distortion: torchvision's functional steps on the whole image (device path)
    against OpenCV's after the resize (worker path). Each differs from torchvision by rounding only
    (tests/test_augment.py: within 2 levels on average), and the per-pixel steps commute with the resize up to
    the clipping between steps: within 2 levels on average."""
    transform, loader = device_loader(coco16, AugmentConfig())
    differences = []
    for batch in loader:
        for image, target in zip(batch.images, batch.targets):
            expected, expected_target = reference(transform, coco16, target["index"], 3)
            assert torch.equal(target["boxes"], expected_target["boxes"])
            differences.append((image.float() - expected.float()).abs().mean().item())
    assert max(differences) <= 2.0


def _png_and_rotated_jpeg(tmp_path, data: DetectionData) -> DetectionData:
    """The first 4 records, the first stored as PNG, the second with an EXIF orientation of 3 (180 degrees:
    the size fits the annotation either way, and the pixels are turned upright)."""
    records = []
    for i, record in enumerate(data.records[:4]):
        pixels = Image.open(record.path).convert("RGB")
        path = tmp_path / f"{i}{'.png' if i == 0 else '.jpg'}"
        exif = Image.Exif()
        if i == 1:
            exif[0x0112] = 3
            pixels = pixels.rotate(180)  # stored turned, so that upright it shows the annotated scene
        pixels.save(path, **({"quality": 95, "exif": exif} if i else {}))
        records.append(ImageRecord(path, record.width, record.height, record.boxes, record.labels,
                                   record.iscrowd, record.difficult, image_id=i, origin=str(path)))
    return DetectionData(records, data.class_names, "mixed", "test")


def test_images_that_are_not_plain_jpegs_are_augmented_in_their_worker(tmp_path, coco16):
    data = _png_and_rotated_jpeg(tmp_path, coco16)
    transform = EncodedTrainAugment(train_transform(Preprocess((96, 96)), GEOMETRY_ONLY))
    kinds = [type(transform(r, record_target(r), 7)[0]) for r in data.records]
    assert kinds == [torch.Tensor, torch.Tensor, EncodedSample, EncodedSample]
    transform, loader = device_loader(data, GEOMETRY_ONLY, seed=1)
    (batch,) = list(loader)
    for image, target in zip(batch.images, batch.targets):
        expected, _ = reference(transform, data, target["index"], 1)
        # JPEG re-encoding of the turned copy moves pixels a little; the turn itself would move them by far more
        assert (image.float() - expected.float()).abs().mean() < 4.0


def test_a_jpeg_that_does_not_decode_fails_with_its_name_or_is_skipped(tmp_path, coco16):
    data = DetectionData([], coco16.class_names, "cut", "test")
    for i, record in enumerate(coco16.records[:4]):
        path = tmp_path / f"{i}.jpg"
        shutil.copy(record.path, path)
        if i == 2:
            path.write_bytes(path.read_bytes()[:2000])  # the header survives: the worker hands the bytes on
        data.records.append(ImageRecord(path, record.width, record.height, record.boxes, record.labels,
                                        record.iscrowd, record.difficult, image_id=i, origin=str(path)))
    _, loader = device_loader(data, GEOMETRY_ONLY)
    with pytest.raises(DataError, match="2.jpg: cannot decode"):
        list(loader)
    _, loader = device_loader(data, GEOMETRY_ONLY, skip_bad=True)
    (batch,) = list(loader)
    assert batch.skipped == 1 and len(batch) == 3 and batch.images.shape[0] == 3
    assert sorted(t["index"] for t in batch.targets) == [0, 1, 3]


def test_data_decode_cuda_is_refused_without_a_gpu(tmp_path, shapes):
    from detzoo.common.config import load_config
    from detzoo.engine.train import train

    config = load_config("ssd300_mobilenetv2", ["model.input_size=64", "data.decode=cuda", "train.device=cpu",
                                                f"data.train={shapes[0]}", f"train.output={tmp_path}"])
    with pytest.raises(ConfigError, match="^data.decode=cuda decodes on the training GPU, but training runs on "
                                          "cpu; use data.decode=cpu$"):
        train(config)
    assert not any(tmp_path.iterdir())  # refused before the run folder was made


class WorkerReport:
    """A transform that reports which process made the sample and with how many threads."""

    reads_images = True

    def __call__(self, record, target, seed):
        import cv2

        target["worker"] = torch.tensor([os.getpid(), torch.get_num_threads(), cv2.getNumThreads(), seed])
        return torch.zeros(3, 8, 8, dtype=torch.uint8), {"boxes": target["boxes"], **target}


def test_training_workers_persist_across_epochs_single_threaded_and_resume_exactly(coco16):
    import cv2

    cv2.setNumThreads(2)  # as if this process used more: the workers still take one
    try:
        sampler = TrainBatchSampler(coco16, 4, seed=5)
        loader = train_loader(DetectionDataset(coco16, WorkerReport()), sampler, 1, workers=2)
        epochs = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            epochs.append(torch.stack([t["worker"] for batch in loader for t in batch.targets]))
        sampler.set_epoch(1, skip=2)  # a resume in the middle of epoch 2
        resumed = torch.stack([t["worker"] for batch in loader for t in batch.targets])
        loader_module.close_loader(loader)
    finally:
        cv2.setNumThreads(-1)
    pids = [set(e[:, 0].tolist()) for e in epochs]
    assert len(pids[0]) == 2 and pids[0] == pids[1] == set(resumed[:, 0].tolist())  # the same two processes
    assert (epochs[0][:, 1] == 1).all() and (epochs[0][:, 2] == 1).all()  # one torch and one OpenCV thread each
    for epoch, made in enumerate(epochs):  # each sample got its (seed, epoch, index) seed, in the sampler's order
        sampler.set_epoch(epoch)
        assert made[:, 3].tolist() == [sample_seed(5, epoch, i) for batch in sampler for i, _ in batch]
    assert torch.equal(resumed[:, 3], epochs[1][8:, 3])


def test_batches_are_pinned_for_a_gpu_only(monkeypatch):
    """``pin_memory=True`` passed a ``Batch`` through unpinned before (torch pins only what it knows or what has
    a ``pin_memory`` method); every tensor of the batch is pinned now. (Pinning needs a GPU: recorded here.)"""
    assert loader_kwargs(2, "cpu")["pin_memory"] is False and loader_kwargs(2)["pin_memory"] is False
    assert loader_kwargs(2, torch.device("cuda"))["pin_memory"] is True
    assert loader_kwargs(2, "cuda")["persistent_workers"] is False  # only the training loader persists
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pinned.append(self) or self.clone())
    targets = [{"boxes": torch.zeros(2, 4), "labels": torch.zeros(2), "path": "a.jpg", "orig_size": (3, 4)}]
    batch = Batch(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), targets, [(4, 4)], extra={"padded": torch.ones(3)})
    out = batch.pin_memory()
    # the images, the five padded target tensors (boxes, labels, iscrowd, difficult, valid) and extra["padded"]
    assert len(pinned) == 7 and out.images is not batch.images and out.extra["padded"] is not batch.extra["padded"]
    assert out.targets[0]["path"] == "a.jpg" and out.targets[0]["orig_size"] == (3, 4)
    assert torch.equal(out.targets[0]["boxes"], targets[0]["boxes"])


def test_prefetch_depth():
    """The CPU keeps torch's 2 per worker; a GPU gets at least 8 batches in flight."""
    assert [prefetch_batches(w, "cpu") for w in (1, 2, 8)] == [2, 2, 2]
    assert [prefetch_batches(w, "cuda") for w in (1, 2, 3, 4, 15)] == [8, 4, 3, 2, 2]


def test_the_training_read_turns_a_180_degree_exif_image_upright(tmp_path):
    """An EXIF orientation that keeps the size (3: 180 degrees) fits the annotation either way, and the
    readers show it upright; the training read at a reduced scale took the stored pixels (upside down)."""
    from detzoo.data.scaled_read import read_image_at_least

    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[10:30, 20:60] = (230, 20, 20)
    exif = Image.Exif()
    exif[0x0112] = 3
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95, exif=exif)
    record = ImageRecord(tmp_path / "a.jpg", 200, 100, np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                         np.zeros(0, bool), np.zeros(0, bool), image_id=0, origin="a.json")
    image, reduction = read_image_at_least(record, 50, 25)
    red_rows = np.nonzero(np.asarray(image)[:, :, 0] > 150)[0]
    assert reduction == 1 and red_rows.min() >= 65  # rows 70..90 upright (10..30 as stored)
    assert torch.equal(torch.from_numpy(np.asarray(image)).permute(2, 0, 1), read_image(record))


def test_a_process_with_a_live_persistent_loader_exits(tmp_path, coco16):
    """A loader still holding its persistent workers at exit (here a module-level one): multiprocessing ends
    daemonic workers with SIGTERM, which ours ignore, then waits for them - that wait never ended. The exit
    hook shuts them down first."""
    import subprocess
    import sys

    from fast_training import subprocess_env

    script = tmp_path / "live_loader.py"
    script.write_text(
        "from detzoo.common.config import DatasetSpec, AugmentConfig\n"
        "from detzoo.data.formats import read_dataset\n"
        "from detzoo.data.loader import DetectionDataset, TrainBatchSampler, train_loader\n"
        "from detzoo.data.transforms import Preprocess, train_transform\n"
        f"data = read_dataset(DatasetSpec({str(coco16.records[0].path.parent.parent)!r}))\n"
        "data.records = data.records[:4]\n"
        "dataset = DetectionDataset(data, train_transform(Preprocess((64, 64)), AugmentConfig()))\n"
        "loader = train_loader(dataset, TrainBatchSampler(data, 2), 1, workers=1)\n"
        "print(sum(len(batch) for batch in loader))\n")
    done = subprocess.run([sys.executable, str(script)], env=subprocess_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "4", done.stderr
