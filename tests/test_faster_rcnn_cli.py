"""Faster R-CNN (DCN) end to end through the CLI on real COCO images: train one short epoch with evaluation,
then ``detzoo eval`` (scored exactly as pycocotools scores its detections.json) and ``detzoo predict``."""

import json

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detzoo.cli import main

# wide: 149 (with crowd boxes), 250 (no objects); tall: 36, 564 (with crowd boxes) -> two aspect-grouped batches
IMAGE_IDS = [149, 250, 36, 564]
FAST = ["model.input_size=160", "model.roi_batch_size=64", "model.backbone_weights=null", "model.score_thresh=0.0",
        "train.batch_size=2", "train.epochs=1", "train.checkpoint_every=0", "data.workers=0", "eval.batch_size=2"]


@pytest.fixture(scope="module")
def subset(tmp_path_factory, coco128_json):
    """A COCO annotation file of four coco128 images (original category ids, crowd boxes kept)."""
    data = json.loads(coco128_json.read_text())
    data["images"] = [i for i in data["images"] if i["id"] in IMAGE_IDS]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in IMAGE_IDS]
    assert any(a["iscrowd"] for a in data["annotations"])
    path = tmp_path_factory.mktemp("coco4") / "instances_four.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, subset, coco128):
    out = tmp_path_factory.mktemp("runs")
    images = coco128 / "val2017"
    assert main(["train", "faster_rcnn_r50_fpn_dcn", *FAST, f"data.train={subset}", f"data.train.images={images}",
                 f"data.val={subset}", f"data.val.images={images}", f"train.output={out}", "train.name=dcn"]) == 0
    return out / "dcn"


def test_train_evaluates_and_writes_checkpoints(run):
    assert {"best.pt", "last.pt", "metrics.csv", "config.yaml"} <= {p.name for p in run.iterdir()}
    header, row = (run / "metrics.csv").read_text().splitlines()
    columns = dict(zip(header.split(","), row.split(",")))
    for key in ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "val_mAP"):
        assert key in columns
    assert int(columns["step"]) == 2  # 4 images in 2 aspect-ratio groups of batch 2


def test_eval_matches_pycocotools(run, subset, coco128, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", str(run / "last.pt"), "--data", str(subset), "--images", str(coco128 / "val2017"),
                 "--out", str(out), "--workers", "0", "--batch-size", "2", "--score", "0"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "detections.json").read_text())
    assert {r["image_id"] for r in results} == set(IMAGE_IDS)  # evaluation threshold 0: detections everywhere
    assert "evaluated at score >= 0, at most 100 detections per image" in printed
    gt = COCO(str(subset))
    evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    direct = [line for line in capsys.readouterr().out.splitlines() if line.startswith(" Average")]
    assert len(direct) == 12 and all(line in printed for line in direct)


def test_predict_gives_boxes_in_original_pixels(run, coco128, tmp_path):
    image = coco128 / "val2017" / "000000000036.jpg"  # 481 x 640, resized to 160 x 120 inside the model
    out = tmp_path / "pred"
    assert main(["predict", str(run / "last.pt"), str(image), "--out", str(out), "--score", "0.0",
                 "--workers", "0"]) == 0
    detections = json.loads((out / "000000000036.json").read_text())["detections"]
    assert 0 < len(detections) <= 100
    boxes = [d["box"] for d in detections]
    assert all(0 <= x1 <= x2 <= 481 and 0 <= y1 <= y2 <= 640 for x1, y1, x2, y2 in boxes)
    assert max(x2 for _, _, x2, _ in boxes) > 160  # rescaled from the 120 x 160 input
