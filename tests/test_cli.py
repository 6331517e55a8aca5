"""End to end through the CLI on real data: train, resume, eval, predict, convert."""

import json
import subprocess
import sys

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detzoo.cli import main
from detzoo.engine.callbacks import tensorboard_available

FAST = ["model.input_size=160", "train.batch_size=8", "data.workers=0", "train.warmup_epochs=0.5",
        "eval.batch_size=16"]


def _train(tmp_path, name, data, *extra):
    args = ["train", "ssd300_mobilenetv2", *FAST, f"data.train={data}", f"train.output={tmp_path}",
            f"train.name={name}", *extra]
    assert main(args) == 0
    return tmp_path / name


@pytest.fixture(scope="module")
def coco_run(tmp_path_factory, coco128):
    """Two short epochs on coco128 with evaluation at the end."""
    out = tmp_path_factory.mktemp("runs")
    return _train(out, "coco", coco128, f"data.val={coco128}", "train.epochs=2", "model.score_thresh=0.005",
                  "train.eval_every=2", "train.checkpoint_every=1", "train.keep_checkpoints=1")


def test_train_writes_the_run_folder(coco_run):
    names = sorted(p.name for p in coco_run.iterdir())
    expected = ["best.pt", "config.yaml", "epoch_2.pt", "eval", "last.pt", "loss.png", "lr.png", "mAP.png",
                "metrics.csv"]
    if tensorboard_available():  # the optional extra
        expected.append("tensorboard")
    assert names == expected  # epoch_1.pt pruned
    assert sorted(p.name for p in (coco_run / "eval").iterdir()) == ["class_ap.png", "confusion_matrix.png",
                                                                     "pr_curves.png", "samples.png"]
    rows = (coco_run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,lr,loss_box,loss_cls,loss") and len(rows) == 3
    assert "val_mAP" in rows[0]
    state = torch.load(coco_run / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 32  # 128 images / batch 8 = 16 steps per epoch
    assert state["config"]["train"]["epochs"] == 2 and len(state["class_names"]) == 80


def test_eval_matches_pycocotools_on_its_own_json(coco_run, coco128, coco128_json, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", str(coco_run / "last.pt"), "--data", str(coco128), "--out", str(out),
                 "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    gt = COCO(str(coco128_json))
    results = json.loads((out / "detections.json").read_text())
    assert results, "the briefly trained model should produce some detections"
    evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    direct = capsys.readouterr().out
    summary_lines = [line for line in direct.splitlines() if line.startswith(" Average")]
    assert len(summary_lines) == 12
    for line in summary_lines:
        assert line in printed  # identical numbers, to the printed digit
    assert f"mAP@[.5:.95] {evaluator.stats[0]:.4f}" in printed
    assert "person" in printed  # per-class table


def test_resume_continues_exactly(tmp_path, coco128):
    """24 steps straight == 11 steps, stop (mid-epoch 1), resume to 24 (mid-epoch 2)."""
    straight = _train(tmp_path, "straight", coco128, "train.epochs=2", "train.max_steps=24", "train.eval_every=0")
    stopped = _train(tmp_path, "stopped", coco128, "train.epochs=2", "train.max_steps=11", "train.eval_every=0")
    state = torch.load(stopped / "last.pt", weights_only=True)
    assert (state["epoch"], state["batch_in_epoch"], state["step"]) == (0, 11, 11)
    assert main(["train", "--resume", str(stopped), "train.max_steps=24"]) == 0
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(stopped / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 24 and a["batch_in_epoch"] == b["batch_in_epoch"] == 8
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    rows_a = (straight / "metrics.csv").read_text().splitlines()
    rows_b = (stopped / "metrics.csv").read_text().splitlines()
    assert len(rows_a) == len(rows_b) == 2  # header + epoch 1


def test_train_on_voc_folder_then_predict(tmp_path, micro):
    run = _train(tmp_path, "micro", micro / "train", f"data.val={micro / 'test'}", "train.epochs=1",
                 "model.score_thresh=0.005",
                 "train.max_steps=4", "train.eval_every=0")
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["class_names"] == ["Arduino_Nano", "ESP8266", "Heltec_ESP32_Lora", "Raspberry_Pi_3"]
    out = tmp_path / "pred"
    assert main(["predict", str(run / "last.pt"), str(micro / "test"), "--out", str(out), "--score", "0.0",
                 "--workers", "0"]) == 0
    jsons = sorted(p for p in out.glob("*.json") if p.name != "detections.json")  # + the run's COCO results
    assert len(jsons) == 7 and len(list(out.glob("*.jpg"))) == 7 and (out / "detections.json").is_file()
    first = json.loads(jsons[0].read_text())
    assert first["detections"], "score 0 keeps the top detections"
    det = first["detections"][0]
    assert det["class_name"] in state["class_names"] and len(det["box"]) == 4
    assert 0 <= det["box"][0] <= det["box"][2] <= 800  # original-image pixels


def test_convert_voc_to_txt_and_coco(tmp_path, micro):
    txt = tmp_path / "train.txt"
    assert main(["convert", "--data", str(micro / "train"), "--to", "txt", "--out", str(txt)]) == 0
    first = txt.read_text().splitlines()[0].split()
    assert first[0].endswith(".jpg") and len(first[1].split(",")) == 6
    coco = tmp_path / "train.json"
    assert main(["convert", "--data", str(micro / "train"), "--to", "coco", "--out", str(coco)]) == 0
    data = json.loads(coco.read_text())
    assert len(data["images"]) == 142 and [c["name"] for c in data["categories"]][0] == "Arduino_Nano"


def test_errors_are_one_clear_line(tmp_path, capsys, micro):
    assert main(["train", "ssd300_mobilenetv2", "train.epoch=1"]) == 2
    assert "unknown key 'train.epoch'; did you mean 'train.epochs'?" in capsys.readouterr().err
    assert main(["train", "ssd300_mobilenetv2", f"data.train={tmp_path / 'nope'}"]) == 2
    assert "dataset not found" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing.pt"), "--data", str(micro / "test")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "detzoo.cli", "models"], capture_output=True, text=True,
                            check=True)
    assert "ssd300_mobilenetv2" in result.stdout.split()
