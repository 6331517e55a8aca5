"""Every kind of bad input gets an error naming the file (and line or object) and the problem - or, with
skip_bad, is skipped and counted."""

import json
import shutil

import pytest
import torch

from detzoo.common.config import AugmentConfig, DatasetSpec
from detzoo.data.formats import read_dataset
from detzoo.data.loader import Collate, DetectionDataset
from detzoo.data.records import DataError
from detzoo.data.transforms import Preprocess, train_transform


@pytest.fixture
def voc(tmp_path, micro):
    folder = tmp_path / "voc"
    folder.mkdir()
    for path in sorted((micro / "test").iterdir())[:6]:
        shutil.copy(path, folder)
    return folder


def _first_xml(folder):
    return sorted(folder.glob("*.xml"))[0]


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_missing_image(voc):
    xml = _first_xml(voc)
    xml.with_suffix(".jpg").unlink()
    with pytest.raises(DataError, match=rf"{xml.name}.*image file not found"):
        read_dataset(DatasetSpec(path=str(voc)))
    data = read_dataset(DatasetSpec(path=str(voc)), skip_bad=True)
    assert data.skipped == 1 and len(data) == 2


def test_malformed_xml_names_line(voc):
    xml = _first_xml(voc)
    xml.write_text(xml.read_text().replace("</object>", "</objet>", 1))
    with pytest.raises(DataError, match=rf"{xml.name}: malformed XML at line \d+"):
        read_dataset(DatasetSpec(path=str(voc)))


@pytest.mark.parametrize("edits, message", [
    ([("<xmin>", "<xmin>9000"), ("<xmax>", "<xmax>9000")], "lies outside the 800x600 image"),  # right of it
    ([("<ymin>", "<ymin>-4000"), ("<ymax>", "<ymax>-")], "lies outside"),  # above it
])
def test_box_outside_image(voc, edits, message):
    """A box entirely outside its image is garbage (a box only past the edge is clipped: test_data_repairs)."""
    xml = _first_xml(voc)
    for old, new in edits:
        _edit(xml, old, new)
    with pytest.raises(DataError, match=rf"{xml.name}: object 0 \('\w+'\): box .* {message}"):
        read_dataset(DatasetSpec(path=str(voc)))


def test_box_without_area(voc, capsys):
    """Issue 9 item 2 reversed this test's old assertion (an error): a box without area is dropped, alone,
    and named in the dataset's summary line."""
    xml = _first_xml(voc)
    objects = read_dataset(DatasetSpec(path=str(voc))).records[0].num_objects
    text = xml.read_text()
    xmin = text.split("<xmin>")[1].split("</xmin>")[0]
    xml.write_text(text.replace(text.split("<xmax>")[1].split("</xmax>")[0], xmin, 1))
    data = read_dataset(DatasetSpec(path=str(voc)))
    assert data.dropped_boxes == 1 and len(data) == 3 and data.records[0].num_objects == objects - 1
    assert f"dropped 1 box without area (under 1 px wide or tall inside the image): {xml.name} object 0 " \
        in capsys.readouterr().out


def test_unknown_class_name(voc):
    xml = _first_xml(voc)
    with pytest.raises(DataError, match=rf"{xml.name}: object 0 .*unknown class"):
        read_dataset(DatasetSpec(path=str(voc)), ["not_a_board"])


def test_malformed_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=r"bad.json: invalid JSON at line 2"):
        read_dataset(DatasetSpec(path=str(path)))


def test_coco_unknown_category_and_bad_bbox(tmp_path, coco128_json, coco128):
    raw = json.loads(coco128_json.read_text())
    raw["annotations"][0]["category_id"] = 999
    path = tmp_path / "instances_x.json"
    path.write_text(json.dumps(raw))
    spec = DatasetSpec(path=str(path), images=str(coco128 / "val2017"))
    ann = raw["annotations"][0]
    with pytest.raises(DataError, match=rf"image id {ann['image_id']} .*annotation id {ann['id']}: "
                                        "unknown category_id 999"):
        read_dataset(spec)
    data = read_dataset(spec, skip_bad=True)  # under skip_bad only the bad object goes (issue 9, item 2)
    assert data.skipped_objects == 1 and data.skipped == 0 and len(data) == 128
    raw["annotations"][0]["category_id"] = 1
    raw["annotations"][1]["bbox"] = [10, 10, 0, 5]  # no area: dropped and counted, not an error (item 2)
    path.write_text(json.dumps(raw))
    data = read_dataset(spec)
    assert data.dropped_boxes == 1 and data.skipped == 0 and len(data) == 128


def test_txt_errors_name_the_line(tmp_path, micro):
    img = sorted((micro / "test").glob("*.jpg"))[0].name
    listing = tmp_path / "list.txt"
    root = str(micro / "test")
    cases = [
        (f"{img} 1,2,3,4,1\n{img} 1,2,3\n", r"list.txt:2: object 0 '1,2,3' must be"),
        (f"{img} 1,2,a,4,1\n", r"list.txt:1: object 0 .* non-numeric"),
        (f"{img} 1,2,30,40,9\n", r"list.txt:1: object 0: class 9 is not in 1..2"),
        ("missing.jpg 1,2,30,40,1\n", r"list.txt:1: image file not found"),
        (f"{img} 3000,2,3100,40,1\n", r"list.txt:1: object 0: box .* outside"),
    ]
    for text, message in cases:
        listing.write_text(text)
        with pytest.raises(DataError, match=message):
            read_dataset(DatasetSpec(path=str(listing), images=root), ["a", "b"])


def test_yolo_unknown_class_id(tmp_path, micro):
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    image = sorted((micro / "test").glob("*.jpg"))[0]
    shutil.copy(image, root / "images")
    (root / "labels" / f"{image.stem}.txt").write_text("0 0.5 0.5 0.1 0.1\n5 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match=rf"{image.stem}.txt:2: class 5 is not in 0..1"):
        read_dataset(DatasetSpec(path=str(root)), ["a", "b"])


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_image_fails_when_read_or_is_skipped(voc, damage):
    image = _first_xml(voc).with_suffix(".jpg")
    data_bytes = image.read_bytes()
    image.write_bytes(data_bytes[: len(data_bytes) // 3] if damage == "truncated" else b"not a jpeg at all")
    data = read_dataset(DatasetSpec(path=str(voc)))  # sizes come from the XML: opening succeeds
    dataset = DetectionDataset(data, train_transform(Preprocess((128, 128)), AugmentConfig()))
    index = [r.path for r in data.records].index(image)
    with pytest.raises(DataError, match=rf"{image.name}: cannot decode image"):
        dataset[index]
    skipping = DetectionDataset(data, train_transform(Preprocess((128, 128)), AugmentConfig()), skip_bad=True)
    batch = Collate()([skipping[i] for i in range(len(data))])
    assert batch.skipped == 1 and len(batch) == len(data) - 1
    assert batch.images.dtype == torch.uint8


def test_unknown_format_and_missing_paths(tmp_path):
    with pytest.raises(DataError, match="dataset not found"):
        read_dataset(DatasetSpec(path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no COCO annotations/, VOC XML"):
        read_dataset(DatasetSpec(path=str(tmp_path / "empty")))
