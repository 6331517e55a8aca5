"""The training data pipeline alone: images per second that one DataLoader worker process delivers, on coco128's
real JPEGs - decoding, augmentation, resizing and collation into a batch - ours (data/augment.py) side by side
with torchvision's transforms.v2 run step by step (what detzoo used before, the reference it competes with).

    SSD at 300 px: photometric distortion, zoom-out (up to 4x), IoU crop, flip, resize; batches of 32.
    Faster R-CNN: the 1x recipe's flip and keep-aspect resize into 768 x 1280; batches of 2.

The time is this process's CPU time with one thread for torch and OpenCV, as in a DataLoader worker, so other
processes on a shared machine disturb it little. ``decode`` is the share of our time spent in the JPEG decoder
(``scaled_read.read_image_at_least``); the goal of issue 13 is 400 images/s per worker for the SSD pipeline
(a GPU training ssd300_mobilenetv2 at 1500 images/s fed by 4 cores).

    python benchmarks/bench_data.py [--data ../shared/data/coco128] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import PIL
import PIL.Image
import torch
from common import machine, print_table, shown
from torchvision import tv_tensors
from torchvision.transforms import v2

from detzoo.common.config import AugmentConfig, DatasetSpec, load_config
from detzoo.data import augment as augment_module
from detzoo.data.formats import read_dataset
from detzoo.data.loader import Collate, DetectionDataset, read_image, sample_seed
from detzoo.data.transforms import Preprocess, train_transform
from detzoo.models.zoo_faster_rcnn import keep_aspect_preprocess

DEFAULT_DATA = Path(os.environ.get("DETZOO_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "coco128"
GOAL = 400.0  # images/s per worker, SSD at 300 px


class SkipCropWithoutBoxes(v2.RandomIoUCrop):
    """torchvision's crop loops forever on an image without boxes; detzoo's old pipeline skipped it."""

    def forward(self, *inputs):
        sample = inputs if len(inputs) > 1 else inputs[0]
        return sample if sample[1]["boxes"].shape[0] == 0 else super().forward(*inputs)


def torchvision_pipeline(preprocess: Preprocess, augment: AugmentConfig) -> v2.Compose:
    """The reference: torchvision's transforms.v2, step by step, with the recipe's settings."""
    steps: list[v2.Transform] = []
    if augment.photometric > 0:
        steps.append(v2.RandomPhotometricDistort(p=augment.photometric))
    if augment.zoom_out > 0:
        fill = {tv_tensors.Image: [round(255 * m) for m in preprocess.mean], "others": 0}
        steps.append(v2.RandomZoomOut(fill=fill, side_range=(1.0, augment.zoom_out_max), p=augment.zoom_out))
    if augment.iou_crop:
        steps.append(SkipCropWithoutBoxes())
    if augment.flip > 0:
        steps.append(v2.RandomHorizontalFlip(p=augment.flip))
    resize = (v2.Resize(tuple(preprocess.size), antialias=True) if preprocess.resize == "stretch"
              else v2.Resize(preprocess.size[0], max_size=preprocess.size[1], antialias=True))
    labels = lambda sample: (sample[1]["labels"], sample[1]["iscrowd"])  # noqa: E731
    return v2.Compose([*steps, resize, v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(labels_getter=labels)])


def cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def run_epochs(dataset: DetectionDataset, batch_size: int, preprocess: Preprocess) -> None:
    """What a worker does: samples by (index, seed), collated into batches."""
    collate = Collate(preprocess.size_divisible)
    for epoch in range(ARGS.epochs):
        samples = [dataset[(i, sample_seed(0, epoch, i))] for i in range(len(dataset))]
        for start in range(0, len(samples), batch_size):
            collate(samples[start: start + batch_size])


def decode_seconds(dataset: DetectionDataset, batch_size: int, preprocess: Preprocess) -> tuple[float, float]:
    """(total CPU seconds, of which in the JPEG decoder) of our pipeline."""
    spent = [0.0]
    read = augment_module.read_image_at_least

    def timed_read(*args):
        start = time.process_time()
        result = read(*args)
        spent[0] += time.process_time() - start
        return result

    augment_module.read_image_at_least = timed_read
    try:
        total = cpu_seconds(lambda: run_epochs(dataset, batch_size, preprocess))
    finally:
        augment_module.read_image_at_least = read
    return total, spent[0]


def bench(label: str, preprocess: Preprocess, augment: AugmentConfig, batch_size: int, data) -> list[list]:
    images = ARGS.epochs * len(data)
    reference = DetectionDataset(data, torchvision_pipeline(preprocess, augment))
    before = cpu_seconds(lambda: run_epochs(reference, batch_size, preprocess))
    ours, decoding = decode_seconds(DetectionDataset(data, train_transform(preprocess, augment)), batch_size,
                                    preprocess)
    goal = f"{images / ours / GOAL:.2f}" if "SSD" in label else "-"
    return [[label, "torchvision v2, step by step", f"{1000 * before / images:.2f}", f"{images / before:.0f}", "-",
             "1.00", "-"],
            [label, "detzoo (composed)", f"{1000 * ours / images:.2f}", f"{images / ours:.0f}",
             f"{decoding / ours:.0%}", f"{before / ours:.2f}", goal]]


def read_image_seconds(data, passes: int) -> float:
    """CPU seconds of one pass of ``read_image`` (the JPEG to a uint8 CHW tensor) over the dataset, averaged over
    ``passes`` after a warm-up pass (the first pass also reads the files from disk and loads the codecs)."""
    def decode_all():
        for record in data.records:
            read_image(record)

    decode_all()
    return cpu_seconds(lambda: [decode_all() for _ in range(passes)]) / passes


def decode_at_scales(data) -> list[list]:
    """What Pillow's ``draft`` saves: CPU ms per image to decode the JPEGs at 1, 1/2, 1/4 and 1/8 of their size
    (libjpeg's entropy decoding is the same at every scale; the inverse DCT and colour conversion shrink)."""
    rows = []
    for scale in (1, 2, 4, 8):
        def decode_all(scale=scale):
            for record in data.records:
                with PIL.Image.open(record.path) as image:
                    image.draft("RGB", (record.width // scale, record.height // scale))
                    image.load()

        seconds = cpu_seconds(decode_all)
        rows.append([f"1/{scale}", f"{1000 * seconds / len(data):.2f}"])
    full = float(rows[0][1])
    return [row + [f"{float(row[1]) / full:.0%}"] for row in rows]


def main() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    print(f"machine: {machine()}, Pillow {PIL.__version__}, OpenCV {cv2.__version__}; CPU time of one process "
          f"(a DataLoader worker), {ARGS.epochs} passes over {shown(ARGS.data)}")
    data = read_dataset(DatasetSpec(str(ARGS.data)))
    decode = read_image_seconds(data, ARGS.epochs)
    rows = [["decode only", "read_image: uint8 CHW tensor", f"{1000 * decode / len(data):.2f}",
             f"{len(data) / decode:.0f}", "100%", "-", "-"]]
    ssd = load_config("ssd300_mobilenetv2").data.augment
    rows += bench("SSD 300 px", Preprocess((300, 300)), ssd, 32, data)
    frcnn = load_config("faster_rcnn_r50_fpn").data.augment
    rows += bench("Faster R-CNN keep aspect", keep_aspect_preprocess(768), frcnn, 2, data)
    print_table("JPEG decoding by DCT scale (Pillow draft)", ["scale", "ms/img", "of a full decode"],
                decode_at_scales(data))
    print_table(f"Training data pipeline per worker process (goal for SSD: {GOAL:.0f} images/s)",
                ["pipeline", "implementation", "ms/img", "img/s", "decode", "speed-up", "vs goal"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a dataset of real JPEGs")
    parser.add_argument("--epochs", type=int, default=2, help="passes over the data (a new draw each)")
    ARGS = parser.parse_args()
    main()
