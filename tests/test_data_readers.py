"""Every reader on the real files in ../shared/data, and the converters that write them back."""

import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from detzoo.common.config import DatasetSpec
from detzoo.data.formats import detect_format, read_dataset, read_datasets
from detzoo.data.writers import write_coco, write_txt


def _records_by_name(data):
    return {r.path.name: r for r in data.records}


def test_coco128(coco128, coco128_json):
    data = read_dataset(DatasetSpec(path=str(coco128)))
    raw = json.loads(coco128_json.read_text())
    assert data.format == "coco" and len(data) == 128
    assert len(data.class_names) == 80 and data.class_names[0] == "person"
    assert sum(r.num_objects for r in data.records) == 939
    assert sum(int(r.iscrowd.sum()) for r in data.records) == 10
    assert sum(r.num_objects == 0 for r in data.records) == 2  # images without objects are legal
    # category ids are not contiguous: label -> id mapping kept for writing results
    assert data.category_ids == sorted(c["id"] for c in raw["categories"])
    ann = raw["annotations"][0]
    record = next(r for r in data.records if r.image_id == ann["image_id"])
    x, y, w, h = ann["bbox"]
    label = data.category_ids.index(ann["category_id"])
    row = [i for i, b in enumerate(record.boxes.tolist()) if np.allclose(b, [x, y, x + w, y + h], atol=1e-3)]
    assert row and record.labels[row[0]] == label
    assert data.coco_json == coco128_json


def test_voc_flat_folder(micro):
    train = read_dataset(DatasetSpec(path=str(micro / "train")))
    test = read_dataset(DatasetSpec(path=str(micro / "test")), train.class_names)
    assert detect_format(micro / "train") == "voc"
    assert train.class_names == ["Arduino_Nano", "ESP8266", "Heltec_ESP32_Lora", "Raspberry_Pi_3"]
    assert len(train) == 142 and len(test) == 7
    csv_rows = (micro / "train_labels.csv").read_text().splitlines()[1:]
    assert sum(r.num_objects for r in train.records) == len(csv_rows)
    records = _records_by_name(train)
    name, _w, _h, cls, *box = csv_rows[0].split(",")
    record = records[name]
    assert [float(v) for v in box] in record.boxes.tolist()
    assert train.class_names[record.labels[record.boxes.tolist().index([float(v) for v in box])]] == cls


def _vocdevkit(tmp_path, micro):
    """A VOCdevkit year folder built from the microcontroller files, with a 'difficult' object."""
    root = tmp_path / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    stems = sorted(p.stem for p in (micro / "test").glob("*.xml"))
    for stem in stems:
        shutil.copy(micro / "test" / f"{stem}.jpg", root / "JPEGImages")
        shutil.copy(micro / "test" / f"{stem}.xml", root / "Annotations")
    tree = ET.parse(root / "Annotations" / f"{stems[0]}.xml")
    tree.getroot().find("object/difficult").text = "1"
    tree.write(root / "Annotations" / f"{stems[0]}.xml")
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(stems[:5]) + "\n")
    return root, stems


def test_vocdevkit_with_split(tmp_path, micro):
    root, stems = _vocdevkit(tmp_path, micro)
    data = read_dataset(DatasetSpec(path=str(root), split="test"))
    assert len(data) == 5
    assert _records_by_name(data)[f"{stems[0]}.jpg"].difficult.tolist() == [True]
    everything = read_dataset(DatasetSpec(path=str(root)))
    assert len(everything) == 7


def test_txt_reader_5_and_6_fields(tmp_path, micro):
    names = ["Arduino_Nano", "ESP8266", "Heltec_ESP32_Lora", "Raspberry_Pi_3"]
    listing = tmp_path / "list.txt"
    img = sorted((micro / "test").glob("*.jpg"))
    listing.write_text(f"{img[0].name} 10,20,110,220,2 30,40,50,60,4,1\n\n{img[1].name}\n")
    data = read_dataset(DatasetSpec(path=str(listing), images=str(micro / "test")), names)
    assert data.format == "txt" and len(data) == 2
    first = data.records[0]
    assert first.boxes.tolist() == [[10, 20, 110, 220], [30, 40, 50, 60]]  # x first
    assert first.labels.tolist() == [1, 3]  # 1-based in the file
    assert first.iscrowd.tolist() == [False, True]
    assert data.records[1].num_objects == 0
    assert (first.width, first.height) == (800, 600)


def test_yolo_reader(tmp_path, micro):
    root = tmp_path / "yolo"
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    img = sorted((micro / "test").glob("*.jpg"))[:2]
    for path in img:
        shutil.copy(path, root / "images" / "val")
    (root / "labels" / "val" / f"{img[0].stem}.txt").write_text("1 0.5 0.5 0.25 0.5\n")
    (root / "data.yaml").write_text("names: {0: board_a, 1: board_b}\n")
    data = read_dataset(DatasetSpec(path=str(root), split="val"))
    assert data.format == "yolo" and data.class_names == ["board_a", "board_b"]
    first, second = data.records
    np.testing.assert_allclose(first.boxes, [[300, 150, 500, 450]])
    assert first.labels.tolist() == [1]
    assert second.num_objects == 0  # no label file: no objects


@pytest.mark.parametrize("target", ["coco", "txt"])
def test_convert_round_trip(tmp_path, micro, target):
    source = read_dataset(DatasetSpec(path=str(micro / "train")))
    out = tmp_path / ("train.json" if target == "coco" else "train.txt")
    root = (write_coco if target == "coco" else write_txt)(source, out)
    again = read_dataset(DatasetSpec(path=str(out), images=str(root)), source.class_names)
    assert len(again) == len(source)
    for a, b in zip(source.records, again.records):
        assert a.path.resolve() == b.path.resolve()
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        assert a.labels.tolist() == b.labels.tolist()


def test_several_datasets_concatenate(micro):
    data = read_datasets([DatasetSpec(path=str(micro / "train")), DatasetSpec(path=str(micro / "test"))])
    assert len(data) == 149
    assert len({r.image_id for r in data.records}) == 149
