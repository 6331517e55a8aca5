"""Training transforms keep boxes valid and inside the image (hypothesis property tests)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from detzoo.common.config import AugmentConfig
from detzoo.data.transforms import Preprocess, eval_transform, normalize, train_transform


@st.composite
def samples(draw):
    height = draw(st.integers(20, 160))
    width = draw(st.integers(20, 160))
    count = draw(st.integers(0, 6))
    boxes = []
    for _ in range(count):
        x1 = draw(st.floats(0, width - 2))
        y1 = draw(st.floats(0, height - 2))
        x2 = draw(st.floats(x1 + 1, width))
        y2 = draw(st.floats(y1 + 1, height))
        boxes.append([x1, y1, x2, y2])
    seed = draw(st.integers(0, 2**31 - 1))
    return height, width, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), seed


@settings(max_examples=60, deadline=None)
@given(samples(), st.sampled_from([(64, 64), (48, 80)]))
def test_train_transform_keeps_boxes_inside_and_valid(sample, size):
    height, width, boxes, seed = sample
    transform = train_transform(Preprocess(size), AugmentConfig())
    image = torch.randint(0, 255, (3, height, width), dtype=torch.uint8)
    target = {"boxes": boxes, "labels": torch.arange(len(boxes)), "iscrowd": torch.zeros(len(boxes), dtype=torch.bool),
              "difficult": torch.arange(len(boxes)) % 2 == 0}
    out_image, out = transform.from_pixels(image, target, seed)
    assert out_image.shape == (3, *size) and out_image.dtype == torch.uint8
    b = out["boxes"]
    assert len(b) == len(out["labels"]) == len(out["iscrowd"]) == len(out["difficult"]) <= len(boxes)
    if len(b):
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] <= size[1]).all() and (b[:, 3] <= size[0]).all()
        assert ((b[:, 2] - b[:, 0]) >= 1).all() and ((b[:, 3] - b[:, 1]) >= 1).all()
    # labels and difficult flags still belong to the boxes they came with
    assert set(out["labels"].tolist()) <= set(range(len(boxes)))
    assert out["difficult"].tolist() == (out["labels"] % 2 == 0).tolist()


def test_keep_aspect_resize_fits_inside_limits():
    pre = Preprocess((768, 1280), resize="keep_aspect", size_divisible=32)
    image = torch.zeros(3, 480, 640, dtype=torch.uint8)
    assert eval_transform(pre)(image).shape[-2:] == (768, 1024)
    assert pre.output_size(480, 640) == (768, 1024)
    assert pre.output_size(300, 1500) == (256, 1280)


def test_normalize_uses_the_model_statistics():
    pre = Preprocess((2, 2), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    images = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert torch.allclose(normalize(images, pre), torch.ones(1, 3, 2, 2))
