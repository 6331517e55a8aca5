"""Pascal VOC XML with the images in their own folder (issue 9, item 3): the labelImg/Kaggle layout keeps
images/ beside annotations/ (or annots/), with <folder>images</folder> in each XML."""

import json
import re
import shutil

import pytest

from detzoo.cli import main
from detzoo.common.config import DatasetSpec
from detzoo.data.formats import detect_format, read_dataset
from detzoo.data.records import DataError


def _split_layout(tmp_path, micro, xml_folder="annotations", image_folder="images"):
    """The microcontroller test images in DATASET/<image_folder>/, their XML in DATASET/<xml_folder>/."""
    dataset = tmp_path / "dataset"
    (dataset / image_folder).mkdir(parents=True)
    (dataset / xml_folder).mkdir()
    for xml in sorted((micro / "test").glob("*.xml")):
        shutil.copy(xml.with_suffix(".jpg"), dataset / image_folder)
        text = re.sub(r"<folder>.*</folder>", f"<folder>{image_folder}</folder>", xml.read_text())
        (dataset / xml_folder / xml.name).write_text(text)
    return dataset


def _convert(args, out):
    assert main(["convert", *args, "--to", "coco", "--out", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("xml_folder", ["annotations", "annots"])
def test_dataset_folder_is_detected_and_converted(tmp_path, micro, xml_folder):
    dataset = _split_layout(tmp_path, micro, xml_folder)
    reference = read_dataset(DatasetSpec(path=str(micro / "test")))
    assert detect_format(dataset) == "voc"
    coco = _convert(["--data", str(dataset)], tmp_path / "auto.json")
    assert len(coco["images"]) == 7 == len(reference)
    assert len(coco["annotations"]) == sum(r.num_objects for r in reference.records)
    assert [c["name"] for c in coco["categories"]] == reference.class_names
    data = read_dataset(DatasetSpec(path=str(dataset)))
    assert {r.path.parent for r in data.records} == {dataset / "images"}


def test_annotation_folder_with_images_option(tmp_path, micro):
    dataset = _split_layout(tmp_path, micro)
    coco = _convert(["--data", str(dataset / "annotations"), "--images", str(dataset / "images"), "--format", "voc"],
                    tmp_path / "given.json")
    assert len(coco["images"]) == 7 and len(coco["annotations"]) == 7  # one board per test image
    # --images wins over the image beside the XML and over <folder>
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(dataset / "images", elsewhere)
    data = read_dataset(DatasetSpec(path=str(dataset / "annotations"), images=str(elsewhere), format="voc"))
    assert {r.path.parent for r in data.records} == {elsewhere}


def test_image_found_through_the_xml_folder_tag(tmp_path, micro):
    dataset = _split_layout(tmp_path, micro, image_folder="pictures")
    data = read_dataset(DatasetSpec(path=str(dataset)))
    assert len(data) == 7 and {r.path.parent for r in data.records} == {dataset / "pictures"}


def test_missing_image_names_every_place_tried(tmp_path, micro):
    dataset = _split_layout(tmp_path, micro)
    first = sorted((dataset / "images").iterdir())[0]
    first.unlink()
    given = tmp_path / "given"
    given.mkdir()
    with pytest.raises(DataError) as error:
        read_dataset(DatasetSpec(path=str(dataset), images=str(given)))
    message = str(error.value)
    assert message.startswith(f"{dataset / 'annotations' / first.with_suffix('.xml').name}: image file not found: "
                              f"'{first.name}' or '{first.stem}' with an image suffix, looked in ")
    for folder in (given, dataset / "annotations", dataset / "images", dataset / "JPEGImages"):
        assert str(folder) in message
