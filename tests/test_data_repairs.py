"""Real annotation files have defects the references repair (issue 9, item 2): boxes without area are
dropped one object at a time, boxes past the image edge are clipped, each counted in one summary line per
dataset; garbage stays an error, or under skip_bad costs only its own object."""

import json

import numpy as np
import pytest
from PIL import Image

from detzoo.cli import main
from detzoo.common.config import DatasetSpec
from detzoo.data.formats import read_dataset
from detzoo.data.problems import list_objects
from detzoo.data.records import DataError

# COCO train2017's zero-height boxes (cocoapi issue #113): image 200365's annotation 918 and image 550395's
# annotation 2206849, with their real coordinates.
ZERO_HEIGHT = [(918, [296.65, 388.33, 1.03, 0.0]), (2206849, [9.98, 188.56, 15.75, 0.0])]


def _coco_with_train2017_defects(folder, extra_annotations=()):
    """Two images (450x300 and 300x200) with good boxes, train2017's zero-height boxes, a box 40 px past the
    right edge of the 450 px wide image and one under 1 px wide once clipped."""
    (folder / "train2017").mkdir(parents=True)
    (folder / "annotations").mkdir()
    sizes = {1: (450, 300), 2: (300, 200)}
    for image_id, size in sizes.items():
        Image.new("RGB", size, (90, 120, 150)).save(folder / "train2017" / f"{image_id:012d}.jpg")
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 20, 100, 80]},
        {"id": ZERO_HEIGHT[0][0], "image_id": 1, "category_id": 2, "bbox": ZERO_HEIGHT[0][1]},
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [400, 50, 90, 60]},  # x2 = 490: 40 px past 450
        {"id": ZERO_HEIGHT[1][0], "image_id": 2, "category_id": 1, "bbox": ZERO_HEIGHT[1][1]},
        {"id": 5, "image_id": 2, "category_id": 1, "bbox": [299.5, 10, 20, 20]},  # 0.5 px wide inside
        {"id": 6, "image_id": 2, "category_id": 2, "bbox": [50, 60, 70, 40]},
        *extra_annotations,
    ]
    for ann in annotations:
        ann.update(iscrowd=0, area=ann["bbox"][2] * ann["bbox"][3] if len(ann["bbox"]) == 4 else 0)
    path = folder / "annotations" / "instances_train2017.json"
    path.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": w, "height": h} for i, (w, h) in sizes.items()],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}],
    }))
    return path


def test_train2017_defects_are_repaired_and_counted(tmp_path, capsys):
    path = _coco_with_train2017_defects(tmp_path)
    data = read_dataset(DatasetSpec(path=str(path)))
    assert len(data) == 2 and data.dropped_boxes == 3 and data.clipped_boxes == 1 and data.skipped == 0
    first, second = data.records
    assert first.boxes.tolist() == [[10, 20, 110, 100], [400, 50, 450, 110]]  # clipped to the 450 px edge
    assert first.labels.tolist() == [0, 1] and first.iscrowd.tolist() == [False, False]
    assert second.boxes.tolist() == [[50, 60, 120, 100]] and second.labels.tolist() == [1]
    lines = capsys.readouterr().out.splitlines()
    assert f"warning: {path}: dropped 3 boxes without area (under 1 px wide or tall inside the image): " \
           "instances_train2017.json annotation ids 918, 2206849, 5" in lines
    assert f"warning: {path}: clipped 1 box extending past the image edge: instances_train2017.json " \
           "annotation id 3" in lines


def test_readme_coco_training_command_runs_on_train2017_defects(tmp_path):
    """The README's `detzoo train ssd300_mobilenetv2 data.train=... data.val=...` through config and
    read_datasets, one step (it stopped at the first zero-height box before)."""
    path = _coco_with_train2017_defects(tmp_path / "coco")
    args = ["train", "ssd300_mobilenetv2", f"data.train={path}", f"data.val={path}", "train.max_steps=1",
            "train.epochs=1", "model.input_size=128", "train.batch_size=2", "data.workers=0", "eval.batch_size=2",
            f"train.output={tmp_path}", "train.name=run"]
    assert main(args) == 0
    assert (tmp_path / "run" / "last.pt").is_file()


GARBAGE = [
    ({"bbox": [float("nan"), 10, 20, 20]}, "is not finite"),
    ({"bbox": [10, "ten", 20, 20]}, "'bbox' .* has a non-numeric value"),
    ({"bbox": [10, 10, 20]}, r"'bbox' must be \[x, y, w, h\]"),
    ({"category_id": 7}, "unknown category_id 7"),
    ({"bbox": [600, 10, 20, 20]}, "lies outside the 450x300 image"),
    ({"bbox": [10, -80, 20, 30]}, "lies outside the 450x300 image"),
]


@pytest.mark.parametrize("change, message", GARBAGE)
def test_garbage_is_an_error_or_costs_only_its_object(tmp_path, change, message):
    bad = {"id": 77, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], **change}
    path = _coco_with_train2017_defects(tmp_path, [bad])  # json writes NaN as NaN, and reads it back
    with pytest.raises(DataError, match=rf"image id 1 \(000000000001.jpg\): annotation id 77: .*{message}"):
        read_dataset(DatasetSpec(path=str(path)))
    data = read_dataset(DatasetSpec(path=str(path)), skip_bad=True)
    assert len(data) == 2 and data.skipped == 0 and data.skipped_objects == 1
    assert data.records[0].boxes.tolist() == [[10, 20, 110, 100], [400, 50, 450, 110]]  # the image's others


def test_every_reader_drops_and_clips_the_same_way(tmp_path, capsys):
    """VOC, TXT and YOLO go through the same checks: a box without area is dropped, one past the edge clipped."""
    Image.new("RGB", (450, 300)).save(tmp_path / "a.jpg")
    (tmp_path / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>450</width><height>300</height></size>"
        + "".join(f"<object><name>car</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                  f"<ymax>{d}</ymax></bndbox></object>" for a, b, c, d in
                  [(10, 20, 110, 100), (30, 40, 30, 90), (400, 50, 490, 110)])
        + "</annotation>")
    (tmp_path / "list.txt").write_text("a.jpg 10,20,110,100,1 30,40,30,90,1 400,50,490,110,1\n")
    yolo = tmp_path / "yolo"
    (yolo / "images").mkdir(parents=True)
    (yolo / "labels").mkdir()
    Image.new("RGB", (450, 300)).save(yolo / "images" / "a.jpg")
    (yolo / "labels" / "a.txt").write_text("0 0.1333333 0.2 0.2222222 0.2666667\n0 0.5 0.5 0 0.1\n"
                                           "0 0.9888889 0.2666667 0.2 0.2\n")
    for spec, dropped_line in [(DatasetSpec(path=str(tmp_path), format="voc"), "a.xml object 1 ('car')"),
                               (DatasetSpec(path=str(tmp_path / "list.txt")), "list.txt:1 object 1"),
                               (DatasetSpec(path=str(yolo)), "a.txt line 2")]:
        data = read_dataset(spec, ["car"])
        assert data.dropped_boxes == 1 and data.clipped_boxes == 1
        np.testing.assert_allclose(data.records[0].boxes, [[10, 20, 110, 100], [400, 50, 450, 110]],
                                   atol=1e-3)  # YOLO: 7 significant digits x 450 px
        assert f"without area (under 1 px wide or tall inside the image): {dropped_line}" in capsys.readouterr().out


def test_summary_names_objects_and_caps_the_list():
    items = [("instances_train2017.json", f"annotation id {i}") for i in range(1000, 1012)]
    assert list_objects(items) == ("instances_train2017.json annotation ids " + ", ".join(
        str(i) for i in range(1000, 1010)) + " and 2 more")
    assert list_objects([("a.xml", "object 0 ('car')"), ("b.xml", "object 2 ('dog')"), ("b.xml", "object 3 ('dog')")]) \
        == "a.xml object 0 ('car'); b.xml object 2 ('dog'), object 3 ('dog')"
