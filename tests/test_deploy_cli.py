"""Deployment end to end through the CLI on coco128 with a briefly trained ssd300_mobilenetv2: export with its
check, evaluation and prediction with the ONNX file, INT8 quantization with its report."""

import json
import re

import onnx
import pytest
from pycocotools.coco import COCO

from detzoo.cli import main
from detzoo.evaluation.coco import run_cocoeval
from detzoo.predict.onnx_backend import read_metadata


@pytest.fixture(scope="module")
def checkpoint(trained_checkpoint):
    """The briefly trained ssd300_mobilenetv2 of conftest.py (8 coco128 images, 128 px)."""
    return trained_checkpoint


def _maps(results_file, gt: COCO, image_ids=None) -> tuple[float, float]:
    evaluator, _ = run_cocoeval(gt, json.loads(results_file.read_text()), image_ids)
    return evaluator.stats[0], evaluator.stats[1]


def test_export_then_eval_and_predict_match_pytorch(checkpoint, coco128, coco128_json, trained_subset, tmp_path,
                                                    capsys):
    assert main(["export", str(checkpoint)]) == 0  # checked on the config's data.val (coco128)
    printed = capsys.readouterr().out
    assert "ONNX Runtime vs PyTorch on 8 image(s): largest difference" in printed
    raw = checkpoint.with_suffix(".onnx")
    assert read_metadata(raw).class_names[0] == "person"
    nms = tmp_path / "nms.onnx"
    assert main(["export", str(checkpoint), "--nms", "--out", str(nms), "--check-images",
                 str(coco128 / "val2017")]) == 0
    assert "detections on one side only" in capsys.readouterr().out

    gt = COCO(str(coco128_json))
    scores = {}
    for name, model in (("torch", checkpoint), ("onnx", raw), ("onnx_nms", nms)):
        out = tmp_path / name
        # at the threshold the --nms file baked in (it cannot be evaluated lower): the same selection on all three
        assert main(["eval", str(model), "--data", str(coco128), "--out", str(out), "--workers", "0",
                     "--score", "0.05"]) == 0
        assert "mAP@[.5:.95]" in capsys.readouterr().out
        scores[name] = _maps(out / "detections.json", gt) + _maps(out / "detections.json", gt, trained_subset[1])
    assert scores["torch"][2] > 0.3  # mAP on the 8 training images: a real signal, not 0 vs 0
    for name in ("onnx", "onnx_nms"):  # within 0.1 mAP point on all 128 images, and on the 8
        assert all(abs(a - b) <= 0.001 for a, b in zip(scores[name], scores["torch"])), (name, scores)

    image = sorted((coco128 / "val2017").iterdir())[0]
    for name, model in (("torch", checkpoint), ("onnx", raw)):
        assert main(["predict", str(model), str(image), "--out", str(tmp_path / f"pred_{name}"), "--score", "0.05",
                     "--workers", "0"]) == 0
    torch_pred = json.loads((tmp_path / "pred_torch" / f"{image.stem}.json").read_text())["detections"]
    onnx_pred = json.loads((tmp_path / "pred_onnx" / f"{image.stem}.json").read_text())["detections"]
    assert torch_pred and len(torch_pred) == len(onnx_pred)
    for a, b in zip(torch_pred, onnx_pred):
        assert a["class_name"] == b["class_name"] and abs(a["score"] - b["score"]) < 1e-4
        assert max(abs(x - y) for x, y in zip(a["box"], b["box"])) < 0.1


def test_export_fails_above_its_tolerance(checkpoint, coco128, tmp_path, capsys):
    out = tmp_path / "strict.onnx"
    assert main(["export", str(checkpoint), "--out", str(out), "--tolerance", "1e-12", "--check-count", "2"]) == 2
    assert "the export check failed (tolerance 1e-12; the file was removed)" in capsys.readouterr().err
    assert not out.exists()


def test_quantize_reports_fp32_vs_int8(checkpoint, coco128, trained_subset, tmp_path, capsys):
    fp32 = tmp_path / "model.onnx"
    assert main(["export", str(checkpoint), "--out", str(fp32), "--check-count", "2"]) == 0
    assert main(["quantize", str(fp32), "--data", str(coco128), "--calibration-images", "16",
                 "--eval-data", str(trained_subset[0])]) == 0
    printed = capsys.readouterr().out
    int8 = tmp_path / "model.int8.onnx"
    assert f"INT8 model -> {int8} (calibrated on 16 image(s)" in printed
    metadata = read_metadata(int8)
    assert metadata.precision == "int8" and metadata.extra["calibration"]["images"] == 16
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    rows = {m.group(1): (float(m.group(2)), float(m.group(3)))
            for m in re.finditer(r"^(fp32|int8)\s+([\d.]+)\s+([\d.]+)", printed, re.MULTILINE)}
    assert set(rows) == {"fp32", "int8"}
    assert rows["fp32"][0] > 1.0  # mAP points on the images the model was trained on
    # A toy model trained on 8 images, calibrated on 16: it measured a 5.0 point loss (83.5 -> 78.5). The issue's
    # 1-point target is for trained ssd_vgg16 / ssd_resnet50_fpn; this bound catches a broken quantization
    # (wrong scales or layouts lose tens of points), not the last point.
    assert rows["fp32"][0] - rows["int8"][0] <= 8.0
    assert re.search(r"INT8 vs FP32: [+-][\d.]+ mAP points, [\d.]+x faster", printed)
