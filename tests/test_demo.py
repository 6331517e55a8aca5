"""The embedded default runs end to end (quick mode: a tiny dataset and a few steps)."""

import json

from detzoo.cli import main
from detzoo.data.synthetic import make_shapes_dataset


def test_synthetic_dataset_is_deterministic(tmp_path):
    a_train, _ = make_shapes_dataset(tmp_path / "a", train=6, val=2, size=96, seed=3)
    b_train, _ = make_shapes_dataset(tmp_path / "b", train=6, val=2, size=96, seed=3)
    assert json.loads(a_train.read_text())["annotations"] == json.loads(b_train.read_text())["annotations"]
    assert (tmp_path / "a/train/train_00003.jpg").read_bytes() == (tmp_path / "b/train/train_00003.jpg").read_bytes()
    data = json.loads(a_train.read_text())
    assert {c["name"] for c in data["categories"]} == {"circle", "square", "triangle", "star"}
    assert all(1 <= sum(a["image_id"] == i["id"] for a in data["annotations"]) <= 4 for i in data["images"])


def test_quick_demo_trains_evaluates_and_draws(tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "run").mkdir(parents=True)  # a previous demo's run (it has the marker) is replaced
    (out / "run" / ".detzoo-demo").write_text("")
    (out / "run" / "stale.txt").write_text("from the previous demo")
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "demo finished" in printed and "val mAP@0.5" in printed
    run = out / "run"
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file() and (run / "metrics.csv").is_file()
    assert (run / ".detzoo-demo").is_file() and not (run / "stale.txt").exists()
    assert "val_mAP50" in (run / "metrics.csv").read_text().splitlines()[0]
    drawn = sorted((out / "predictions").glob("*.jpg"))
    assert len(drawn) == 8 and len(list((out / "predictions").glob("*.json"))) == 8
