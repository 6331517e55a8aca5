"""A model evaluated on a COCO file whose categories differ from its classes (issue 9, item 4): other order
and ids, a subset, or a superset. Classes map by name and every class gets its own category id, or the
evaluation stops with one line. Runs `detzoo eval` end to end with pycocotools; only the network is replaced
by a detector that finds exactly the objects drawn into the images."""

import contextlib
import io
import json

import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detzoo.cli import main
from detzoo.common.config import DatasetSpec
from detzoo.common.structures import Detections
from detzoo.data.formats import read_dataset
from detzoo.models.selection import SelectOptions
from detzoo.predict import Predictor

MODEL_CLASSES = ["person", "car", "dog"]
# What is in each image: (class, box xyxy). The detector finds every object; persons with the highest score.
OBJECTS = {1: [("dog", [10, 10, 50, 50]), ("person", [60, 20, 100, 90])],
           2: [("car", [5, 5, 40, 30]), ("dog", [50, 40, 110, 90])]}
SCORE = {"person": 0.9, "car": 0.85, "dog": 0.8}


class PerfectBackend:
    """What evaluation asks a Predictor's backend: its selection for mAP and its own score threshold."""

    score_threshold = 0.05

    def evaluation_options(self, score_threshold=None):
        return SelectOptions(score_threshold=0.001 if score_threshold is None else score_threshold,
                             max_detections=100), ""


class PerfectDetector:
    """Stands in for Predictor: the model's classes, and one detection per object in the image."""

    class_names = MODEL_CLASSES
    backend = PerfectBackend()

    def predict_data(self, data, options=None):
        for record in data.records:
            found = OBJECTS[record.image_id]
            yield Detections(torch.tensor([box for _, box in found], dtype=torch.float32),
                             torch.tensor([SCORE[name] for name, _ in found]),
                             torch.tensor([MODEL_CLASSES.index(name) for name, _ in found]),
                             MODEL_CLASSES, record.image_id, str(record.path))


def _coco_file(folder, categories: dict[int, str]):
    """Two 120x100 images annotated with the objects whose class is among ``categories`` (id -> name)."""
    folder.mkdir()
    id_of = {name: cid for cid, name in categories.items()}
    annotations = []
    for image_id, objects in OBJECTS.items():
        Image.new("RGB", (120, 100)).save(folder / f"{image_id}.jpg")
        for name, (x1, y1, x2, y2) in objects:
            if name in id_of:  # no iscrowd/area: optional in a COCO file
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": id_of[name],
                                    "bbox": [x1, y1, x2 - x1, y2 - y1]})
    path = folder / "instances_val.json"
    path.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 120, "height": 100} for i in OBJECTS],
        "annotations": annotations, "categories": [{"id": c, "name": n} for c, n in categories.items()]}))
    return path


def _eval(monkeypatch, path, out):
    monkeypatch.setattr(Predictor, "from_file", classmethod(lambda cls, *args, **kwargs: PerfectDetector()))
    return main(["eval", "model.pt", "--data", str(path), "--out", str(out)])


def _pycocotools_map(gt_path, results_path) -> float:
    """mAP of pycocotools run directly on the annotation file and the written detections."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        for ann in gt.dataset["annotations"]:
            ann.update(iscrowd=0, area=ann["bbox"][2] * ann["bbox"][3])
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(str(results_path)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


@pytest.mark.parametrize("categories", [
    {7: "dog", 3: "person", 12: "car"},  # another order, other ids
    {1: "dog"},  # a subset: the model's person (label 0) must not become id 1 = dog
    {2: "person", 1: "car"},  # a subset, ids 1..2 reused in another order
])
def test_eval_maps_categories_by_name(tmp_path, monkeypatch, capsys, categories):
    path = _coco_file(tmp_path / "data", categories)
    data = read_dataset(DatasetSpec(path=str(path)), MODEL_CLASSES)
    ids = data.category_ids
    assert len(set(ids)) == 3  # every class its own id
    assert all(ids[MODEL_CLASSES.index(name)] == cid for cid, name in categories.items())
    assert _eval(monkeypatch, path, tmp_path / "out") == 0
    printed = capsys.readouterr().out
    # a perfect detector: AP 1 on every class the file has; the model's other classes have no ground truth
    assert f"mAP@[.5:.95] 1.0000  mAP@0.5 1.0000  ({len(categories)} classes with ground truth" in printed
    results = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert {r["category_id"] for r in results} == set(ids)
    assert f"{_pycocotools_map(path, tmp_path / 'out' / 'detections.json'):.4f}" == "1.0000"  # as printed


def test_eval_on_a_superset_of_the_model_classes_stops_with_one_line(tmp_path, monkeypatch, capsys):
    path = _coco_file(tmp_path / "data", {1: "person", 2: "car", 3: "dog", 4: "cat"})
    assert _eval(monkeypatch, path, tmp_path / "out") == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"error: {path}: categories ['cat'] are not among the 3 classes given (data.classes, "
                     "or the model's): person, car, dog")


def test_yolo_classes_map_by_name(tmp_path):
    """A YOLO folder's own classes.txt in another order maps by name, a class the model lacks stops."""
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.new("RGB", (120, 100)).save(root / "images" / "1.jpg")
    (root / "labels" / "1.txt").write_text("0 0.25 0.3 0.33333 0.4\n1 0.6667 0.55 0.33333 0.7\n")
    (root / "classes.txt").write_text("dog\nperson\n")
    data = read_dataset(DatasetSpec(path=str(root)), MODEL_CLASSES)
    assert data.records[0].labels.tolist() == [2, 0]
    (root / "classes.txt").write_text("dog\ncat\n")
    with pytest.raises(ValueError, match=r"classes \['cat'\] of its classes.txt/data.yaml are not among the 3"):
        read_dataset(DatasetSpec(path=str(root)), MODEL_CLASSES)
