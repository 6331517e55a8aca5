"""EXIF orientation (issue 9, item 6): readers, prediction and drawing work in the pixels viewers show (EXIF
applied); an annotation that gives the stored size (labelled by a tool that ignored EXIF) keeps the stored
pixels."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from detzoo.common.config import DatasetSpec
from detzoo.data.formats import read_dataset
from detzoo.data.loader import read_image
from detzoo.data.transforms import Preprocess
from detzoo.predict import Predictor
from detzoo.predict.outputs import ImageOutputs

# Stored pixels 200 wide x 100 tall with EXIF orientation 6 ("rotate 90 degrees clockwise to display"): viewers
# show 100 x 200, and stored pixel (x, y) appears at (99 - y, x). The red patch stored at x 20..60, y 10..30
# appears at x 70..90, y 20..60.
STORED_SIZE, UPRIGHT_SIZE = (200, 100), (100, 200)
STORED_BOX, UPRIGHT_BOX = [20, 10, 60, 30], [70, 20, 90, 60]


def _rotated_jpeg(path):
    pixels = np.full((100, 200, 3), 40, np.uint8)
    x1, y1, x2, y2 = STORED_BOX
    pixels[y1:y2, x1:x2] = (230, 20, 20)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    return path


def _red_box(image: torch.Tensor) -> list[int]:
    """xyxy of the red pixels of a uint8 [3,H,W] image."""
    red = (image[0] > 150) & (image[1] < 100)
    ys, xs = torch.nonzero(red, as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@pytest.fixture
def folder(tmp_path):
    _rotated_jpeg(tmp_path / "a.jpg")
    return tmp_path


def _voc(folder, size, box):
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height></size>" if size else ""
    (folder / "a.xml").write_text(
        f"<annotation><filename>a.jpg</filename>{size_xml}<object><name>red</name><bndbox><xmin>{box[0]}</xmin>"
        f"<ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object></annotation>")
    return DatasetSpec(path=str(folder), format="voc")


def _txt(folder, size, box):
    (folder / "list.txt").write_text(f"a.jpg {','.join(map(str, box))},1\n")
    return DatasetSpec(path=str(folder / "list.txt"), images=str(folder))


def _yolo(folder, size, box):
    (folder / "yolo" / "images").mkdir(parents=True)
    (folder / "yolo" / "labels").mkdir()
    (folder / "a.jpg").rename(folder / "yolo" / "images" / "a.jpg")
    (x1, y1, x2, y2), (w, h) = box, UPRIGHT_SIZE
    (folder / "yolo" / "labels" / "a.txt").write_text(
        f"0 {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}\n")
    return DatasetSpec(path=str(folder / "yolo"))


def _coco(folder, size, box):
    x1, y1, x2, y2 = box
    (folder / "instances_a.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": size[0], "height": size[1]}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1]}],
        "categories": [{"id": 1, "name": "red"}]}))
    return DatasetSpec(path=str(folder / "instances_a.json"), images=str(folder))


@pytest.mark.parametrize("reader, size, box", [
    (_txt, None, UPRIGHT_BOX),  # no size in the annotation: EXIF applied
    (_yolo, None, UPRIGHT_BOX),
    (_voc, None, UPRIGHT_BOX),
    (_voc, UPRIGHT_SIZE, UPRIGHT_BOX),  # the annotation's size says which pixels it was made on
    (_voc, STORED_SIZE, STORED_BOX),
    (_coco, UPRIGHT_SIZE, UPRIGHT_BOX),
    (_coco, STORED_SIZE, STORED_BOX),
])
def test_readers_use_the_pixels_the_boxes_were_drawn_on(folder, reader, size, box):
    data = read_dataset(reader(folder, size, box), ["red"])
    record = data.records[0]
    assert (record.width, record.height) == (size or UPRIGHT_SIZE)
    np.testing.assert_allclose(record.boxes, [box], atol=1e-4)  # YOLO: normalised floats x 200 px
    image = read_image(record)
    assert tuple(image.shape[-2:]) == (record.height, record.width)
    # the box lies on the red patch; JPEG stores colour per 2x2 block (4:2:0), which moves a red edge by <= 2 px
    np.testing.assert_allclose(_red_box(image), box, atol=2)


class RedFinder:
    """A backend that 'detects' the red patch of each resized image (in input pixels, like a model)."""

    preprocess = Preprocess((64, 64))

    def __call__(self, batch, options=None):
        outputs = []
        for image, (height, width) in zip(batch.images, batch.image_sizes):
            box = torch.tensor([_red_box(image[:, :height, :width])], dtype=torch.float32)
            outputs.append({"boxes": box, "scores": torch.ones(1), "labels": torch.zeros(1, dtype=torch.long)})
        return outputs


def test_prediction_and_drawing_are_in_exif_corrected_pixels(folder, tmp_path):
    predictor = Predictor(RedFinder(), ["red"], batch_size=1)
    det = next(predictor.predict_paths([folder / "a.jpg"]))
    # 64 input px stand for 100 (x) and 200 (y) original px: an edge found within one input pixel is within
    # 200 / 64 = 3.1 original px
    np.testing.assert_allclose(det.boxes[0].tolist(), UPRIGHT_BOX, atol=200 / 64)
    ImageOutputs(tmp_path / "out", [folder / "a.jpg"], folder, ["red"]).add(det)
    assert Image.open(tmp_path / "out" / "a.jpg").size == UPRIGHT_SIZE
