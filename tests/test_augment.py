"""The composed SSD augmentation (data/augment.py): boxes stay on their pixels (hypothesis), also through a
JPEG decoded at a reduced DCT scale; the same sample for the same seed in any worker; the box statistics and
colours of torchvision's step-by-step pipeline."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from detzoo.common.config import AugmentConfig, DatasetSpec
from detzoo.data import augment as augment_module
from detzoo.data.augment import Photometric, every_fourth_pixel
from detzoo.data.formats import read_dataset
from detzoo.data.loader import DetectionDataset, TrainBatchSampler, record_target, sample_seed, train_loader
from detzoo.data.records import DetectionData, ImageRecord
from detzoo.data.transforms import Preprocess, train_transform

GEOMETRY_ONLY = AugmentConfig(photometric=0.0)  # stable colours: white object, black image, mean-coloured canvas
SIZES = [Preprocess((64, 64)), Preprocess((48, 80)), Preprocess((64, 96), resize="keep_aspect")]


def bright_extent(image: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) pixel edges of the pixels brighter than the half level in every channel (the white
    object; the canvas fill of ImageNet means is below it)."""
    ys, xs = np.nonzero((image > 127).all(dim=0).numpy())
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def assert_box_on_its_pixels(image: torch.Tensor, target: dict, tolerance: float) -> bool:
    """Label 0's box (the white object) against the extent of the white pixels, when it is kept and at least
    3 px a side (smaller ones are blurred below the half level). Bilinear resampling puts the half level of a
    step edge where the edge maps to, so the extent's edges lie within half a pixel of the box's."""
    kept = (target["labels"] == 0).nonzero().flatten()
    if len(kept) == 0:
        return False
    box = target["boxes"][kept[0]]
    if (box[2:] - box[:2]).min() < 3:
        return False
    extent = bright_extent(image)
    assert extent is not None, f"box {box.tolist()} kept but no white pixel left"
    assert max(abs(a - b) for a, b in zip(extent, box.tolist())) <= tolerance, (extent, box.tolist())
    return True


@st.composite
def scenes(draw):
    height, width = draw(st.integers(24, 160)), draw(st.integers(24, 160))
    x0, y0 = draw(st.integers(0, width - 8)), draw(st.integers(0, height - 8))
    x1, y1 = draw(st.integers(x0 + 6, width)), draw(st.integers(y0 + 6, height))
    others = draw(st.lists(st.tuples(st.floats(0, 0.8), st.floats(0, 0.8), st.floats(0.05, 0.2),
                                     st.floats(0.05, 0.2)), max_size=3))
    boxes = [[x0, y0, x1, y1]] + [[u * width, v * height, (u + w) * width, (v + h) * height] for u, v, w, h in others]
    return height, width, torch.tensor(boxes, dtype=torch.float32), draw(st.integers(0, 2**31 - 1))


@settings(max_examples=80, deadline=None)
@given(scenes(), st.sampled_from(SIZES))
def test_boxes_stay_on_their_pixels(scene, preprocess):
    height, width, boxes, seed = scene
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    x0, y0, x1, y1 = boxes[0].int().tolist()
    image[:, y0:y1, x0:x1] = 255
    target = {"boxes": boxes, "labels": torch.arange(len(boxes)), "iscrowd": torch.zeros(len(boxes), dtype=torch.bool)}
    out, out_target = train_transform(preprocess, GEOMETRY_ONLY).from_pixels(image, target, seed)
    assert out.shape[0] == 3 and out.dtype == torch.uint8
    if preprocess.resize == "stretch":
        assert tuple(out.shape[1:]) == preprocess.size
    assert_box_on_its_pixels(out, out_target, tolerance=1.0)


def jpeg_record(folder: Path, box: tuple[int, int, int, int], size=(640, 480)) -> ImageRecord:
    path = folder / f"scene_{box[0]}_{box[1]}.jpg"
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    pixels[box[1]:box[3], box[0]:box[2]] = 255
    Image.fromarray(pixels).save(path, quality=95)
    boxes = np.array([box, [20, 30, 120, 90]], np.float32)
    return ImageRecord(path, size[0], size[1], boxes, np.array([0, 1]), np.zeros(2, bool), np.zeros(2, bool),
                       image_id=0, origin=str(path))


def test_boxes_stay_on_their_pixels_when_the_jpeg_is_decoded_smaller(tmp_path, monkeypatch):
    """Through the file: the JPEG is decoded at 1/2, 1/4 or 1/8 of its size where the output is small enough.
    A decoded pixel then averages 2-8 file pixels, so an edge can blur by half a decoded pixel, which the
    output shrinks further (a reduction r is only used when the output has <= 1/r pixel per file pixel):
    tolerance 1.5 output pixels."""
    reductions = []
    read = augment_module.read_image_at_least

    def spy(*args):
        image, reduction = read(*args)
        reductions.append(reduction)
        return image, reduction

    monkeypatch.setattr(augment_module, "read_image_at_least", spy)
    records = [jpeg_record(tmp_path, box) for box in [(200, 150, 440, 330), (40, 60, 400, 420)]]
    dataset = DetectionDataset(DetectionData(records, ["object", "other"], "scenes", "test"),
                               train_transform(Preprocess((96, 96)), GEOMETRY_ONLY))
    checked = sum(assert_box_on_its_pixels(*dataset[(i % 2, seed)], tolerance=1.5)
                  for i, seed in enumerate(range(40)))
    assert checked >= 10 and max(reductions) > 1 and min(reductions) == 1


def test_a_sample_depends_on_its_seed_only(coco128):
    """The same (index, seed) gives the same pixels and boxes in any process, whatever the worker count."""
    data = read_dataset(DatasetSpec(str(coco128)))
    data.records = data.records[:8]
    dataset = DetectionDataset(data, train_transform(Preprocess((64, 64)), AugmentConfig()))
    seed = sample_seed(0, 0, 3)
    first, again, other = dataset[(3, seed)], dataset[(3, seed)], dataset[(3, seed + 1)]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1]["boxes"], again[1]["boxes"])
    assert not torch.equal(first[0], other[0])
    batches = []
    for workers in (0, 2):
        sampler = TrainBatchSampler(data, 4, seed=5)
        batches.append(list(train_loader(dataset, sampler, 1, workers)))
    for a, b in zip(*batches):
        assert torch.equal(a.images, b.images)
        assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(a.targets, b.targets))


def torchvision_pipeline(preprocess: Preprocess, augment: AugmentConfig) -> v2.Compose:
    """The reference: torchvision's transforms, step by step, with the recipe's settings."""
    fill = {tv_tensors.Image: [round(255 * m) for m in preprocess.mean], "others": 0}
    return v2.Compose([v2.RandomZoomOut(fill=fill, side_range=(1.0, augment.zoom_out_max), p=augment.zoom_out),
                       v2.RandomIoUCrop(), v2.RandomHorizontalFlip(p=augment.flip),
                       v2.Resize(tuple(preprocess.size), antialias=True), v2.ClampBoundingBoxes(),
                       v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=lambda s: s[1]["labels"])])


def test_box_statistics_match_torchvision_step_by_step():
    """Over 400 draws of one scene, the kept-box count, the boxes' area and their mean centre agree with
    torchvision's pipeline within 4.5 standard errors of the difference of two sample means (a false alarm
    once in ~150 000 runs per statistic)."""
    preprocess, augment = Preprocess((64, 64)), GEOMETRY_ONLY
    boxes = torch.tensor([[10.0, 8, 50, 40], [60, 30, 90, 70], [5, 50, 25, 70]])
    image = torch.zeros(3, 72, 96, dtype=torch.uint8)

    def statistics(outputs) -> np.ndarray:
        rows = []
        for b in outputs:
            area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum().item() / 64 ** 2
            centre = ((b[:, 0] + b[:, 2]) / 2).mean().item() / 64 if len(b) else 0.5
            rows.append([len(b), area, centre])
        return np.array(rows)

    def target():
        return {"boxes": boxes.clone(), "labels": torch.arange(3), "iscrowd": torch.zeros(3, dtype=torch.bool)}

    ours = train_transform(preprocess, augment)
    mine = statistics(ours.from_pixels(image, target(), seed)[1]["boxes"] for seed in range(400))
    reference = torchvision_pipeline(preprocess, augment)
    torch.manual_seed(0)
    theirs = []
    for _ in range(400):
        t = target()
        t["boxes"] = tv_tensors.BoundingBoxes(t["boxes"], format="XYXY", canvas_size=(72, 96))
        theirs.append(reference(tv_tensors.Image(image), t)[1]["boxes"].as_subclass(torch.Tensor))
    theirs = statistics(theirs)
    standard_error = np.sqrt(mine.var(axis=0) / len(mine) + theirs.var(axis=0) / len(theirs))
    assert (np.abs(mine.mean(axis=0) - theirs.mean(axis=0)) <= 4.5 * standard_error).all(), (
        mine.mean(axis=0), theirs.mean(axis=0), standard_error)


def torchvision_photometric(pixels: torch.Tensor, factors: dict) -> torch.Tensor:
    """torchvision's functional steps in RandomPhotometricDistort's order, on uint8 [H, W, 3]."""
    image = pixels.permute(2, 0, 1)
    if factors["brightness"] is not None:
        image = F.adjust_brightness(image, factors["brightness"])
    if factors["contrast"] is not None and factors["contrast_before"]:
        image = F.adjust_contrast(image, factors["contrast"])
    if factors["saturation"] is not None:
        image = F.adjust_saturation(image, factors["saturation"])
    if factors["hue"] is not None:
        image = F.adjust_hue(image, factors["hue"])
    if factors["contrast"] is not None and not factors["contrast_before"]:
        image = F.adjust_contrast(image, factors["contrast"])
    if factors["permutation"] is not None:
        image = F.permute_channels(image, list(factors["permutation"]))
    return image.permute(1, 2, 0)


def coco_pixels(coco128, index: int = 0) -> torch.Tensor:
    path = sorted((coco128 / "val2017").glob("*.jpg"))[index]
    return torch.from_numpy(np.array(Image.open(path).convert("RGB").reduce(2)))


def mean_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


@pytest.mark.parametrize("factors", [
    dict(brightness=1.1, contrast=0.7, saturation=1.3, hue=None, contrast_before=True, permutation=(2, 0, 1)),
    dict(brightness=0.9, contrast=1.4, saturation=0.6, hue=0.05, contrast_before=False, permutation=None),
    dict(brightness=1.12, contrast=0.55, saturation=1.45, hue=-0.04, contrast_before=False, permutation=(1, 2, 0)),
    dict(brightness=None, contrast=None, saturation=None, hue=0.02, contrast_before=True, permutation=None),
])
def test_photometric_matches_torchvision_for_the_same_factors(coco128, factors):
    """The same steps as torchvision's, clipped between steps as there, on real images. The arithmetic differs
    in rounding only: torchvision truncates to uint8 after each of its up to 5 steps, OpenCV rounds (half a
    level apart on average per step), and OpenCV's HSV keeps hue, saturation and value in 8 bits (a hue step of
    1/256 turn moves a channel by at most spread x 6/512 < 3 levels, half that on average): within 2 levels
    on average (measured: under 1)."""
    for index in range(3):
        pixels = coco_pixels(coco128, index)
        distortion = Photometric(**factors)
        ours = torch.from_numpy(distortion.apply(pixels.numpy(), lambda p=pixels: every_fourth_pixel(p)))
        ours = ours[..., distortion.channel_order]
        assert mean_difference(ours, torchvision_photometric(pixels, factors)) <= 2.0


def test_record_target_boxes_feed_the_augmentation(coco128):
    """Every coco128 record goes through the file path (decoded at a reduced scale where it can) and comes
    out at the model's size with valid boxes."""
    data = read_dataset(DatasetSpec(str(coco128)))
    transform = train_transform(Preprocess((300, 300)), AugmentConfig())
    for index, record in enumerate(data.records[:16]):
        image, target = transform(record, record_target(record), sample_seed(0, 0, index))
        assert image.shape == (3, 300, 300) and image.dtype == torch.uint8
        b = target["boxes"]
        assert len(b) == len(target["labels"]) == len(target["iscrowd"])
        assert ((b[:, 2:] - b[:, :2]) >= 1).all() and (b >= 0).all() and (b <= 300).all()
