"""The Python API (issue 18): `detzoo.load` and the handle's verbs, used as a user calls them - the README's
quick start run exactly as printed - and checked against the `detzoo` command, which calls the same library
functions."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import detzoo
from detzoo.cli import main
from detzoo.common.config import load_config
from detzoo.common.errors import ConfigError
from detzoo.models.selection import SelectOptions
from detzoo.predict import Predictor
from predict_helpers import CLASSES, photos, tiny_checkpoint, write_clip

ROOT = Path(__file__).resolve().parents[1]
SCORE = 0.005  # random weights: scores sit near the focal prior 0.01 (predict_helpers)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, coco128):
    """best.pt (a tiny 3-class model) and photos/ (three coco128 images), as the README's quick start has them."""
    root = tmp_path_factory.mktemp("user")
    tiny_checkpoint(root / "best.pt")
    (root / "photos").mkdir()
    for path in sorted((coco128 / "val2017").glob("*.jpg"))[:3]:
        shutil.copy(path, root / "photos" / path.name)
    return root


@pytest.fixture(scope="module")
def model(workdir):
    return detzoo.load(workdir / "best.pt", workers=0)


def _python_blocks(section: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(f"## {section}\n")
    end = readme.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", readme[start:end], flags=re.S)


def test_readme_quick_start_runs_as_printed_and_writes_what_the_cli_writes(trained_checkpoint, workdir, tmp_path,
                                                                          monkeypatch):
    """Load a checkpoint, predict a folder, draw, save: at most 3 lines; the drawn images are the very
    bytes `detzoo predict` writes (the same drawing and the same Predictor). The briefly trained model of
    conftest.py, on images it trained on, so that boxes above the default score are drawn."""
    block = _python_blocks("Python")[0]
    assert len(block.strip().splitlines()) <= 3
    shutil.copy(trained_checkpoint, tmp_path / "best.pt")
    shutil.copytree(workdir / "photos", tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    saved = sorted(p.name for p in (tmp_path / "predictions").iterdir())
    assert saved == sorted(p.name for p in (tmp_path / "photos").iterdir())
    assert main(["predict", "best.pt", "photos/", "--out", "cli", "--workers", "0"]) == 0
    drawn = 0
    for name in saved:
        assert (tmp_path / "predictions" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
        drawn += bool(json.loads((tmp_path / "cli" / f"{Path(name).stem}.json").read_text())["detections"])
    assert drawn > 0


def test_results_hold_what_the_cli_writes(model, workdir):
    results = model.predict(workdir / "photos", score=SCORE)
    assert [r.path.name for r in results] == sorted(p.name for p in (workdir / "photos").iterdir())
    main(["predict", str(workdir / "best.pt"), str(workdir / "photos"), "--out", str(workdir / "cli_json"),
          "--score", str(SCORE), "--workers", "0", "--no-draw"])
    for result in results:
        assert len(result) > 0 and result.class_names == CLASSES
        assert result.names == [CLASSES[i] for i in result.labels.tolist()]
        written = json.loads((workdir / "cli_json" / f"{result.path.stem}.json").read_text())
        assert result.to_dict() == written
        assert result.to_coco()[0]["category_id"] == result.labels[0].item() + 1
        drawn = result.plot()
        assert drawn.shape == (*Image.open(result.path).size[::-1], 3) and drawn.dtype == np.uint8
        assert np.array_equal(result.plot(channels="bgr"), drawn[:, :, ::-1])
    with pytest.raises(ConfigError, match="would replace the source image"):
        results[0].save(results[0].path)


def test_images_in_memory_give_the_detections_of_their_files(model, workdir):
    """Pillow, NumPy (RGB and BGR, said explicitly), uint8 CHW tensors, a stack, and a list mixing them with a
    path: each image's detections are those of its file (same pixels, same batch of three)."""
    files = model.predict(workdir / "photos", score=SCORE)
    rgb = [np.array(Image.open(r.path).convert("RGB")) for r in files]
    inputs = {
        "pillow": [Image.open(r.path) for r in files],
        "numpy rgb": rgb,
        "numpy bgr": [a[:, :, ::-1].copy() for a in rgb],
        "mixed bgr": [files[0].path, rgb[1][:, :, ::-1].copy(), Image.open(files[2].path)],  # files stay RGB
        "tensor": [torch.from_numpy(a).permute(2, 0, 1) for a in rgb],
        "stack": torch.from_numpy(np.stack([rgb[0]] * 3)).permute(0, 3, 1, 2),  # one image three times
        "mixed": [files[0].path, rgb[1], Image.open(files[2].path)],
    }
    for kind, images in inputs.items():
        channels = "bgr" if "bgr" in kind else "rgb" if "numpy" in kind or kind == "mixed" else None
        results = model.predict(images, channels=channels, score=SCORE)
        assert len(results) == len(files), kind
        for got, want in zip(results, [files[0]] * 3 if kind == "stack" else files):
            assert torch.equal(got.boxes, want.boxes) and torch.equal(got.scores, want.scores), kind
    single = model.predict(rgb[0], channels="rgb", score=SCORE)[0]
    assert single.file_name == "image0.jpg" and single.save(workdir / "memory").name == "image0.jpg"


def test_in_memory_images_that_cannot_be_read_unambiguously_are_refused(model, workdir):
    rgb = np.zeros((40, 60, 3), np.uint8)
    with pytest.raises(ConfigError, match=r"channels='rgb' \(Pillow, imageio\) or channels='bgr'"):
        model.predict(rgb)
    with pytest.raises(ConfigError, match=r"must be uint8 \[3,H,W\], got torch.float32"):
        model.predict(torch.rand(3, 40, 60))
    with pytest.raises(ConfigError, match=r"permute\(2, 0, 1\)"):
        model.predict(torch.zeros(40, 60, 3, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="image 1 of the list: a NumPy image must be uint8"):
        model.predict([rgb, rgb.astype(np.float32)], channels="rgb")
    with pytest.raises(ConfigError, match="cannot predict on a dict"):
        model.predict({"image": rgb})
    with pytest.raises(ConfigError, match="a camera or stream never ends"):
        model.predict(0)  # refused before the camera is opened


def test_video_frames_are_the_video_predictors(model, workdir, coco128):
    clip = workdir / "clip.mp4"
    frames = write_clip(clip, photos(coco128, 2), hold=2)
    results = model.predict(str(clip), score=SCORE)
    assert [r.frame for r in results] == list(range(frames)) and results[0].file_name == "clip_000000.jpg"
    predictor = Predictor.from_file(workdir / "best.pt", workers=0)
    reference = list(predictor.predict_video(str(clip), SelectOptions(score_threshold=SCORE)))
    assert len(reference) == frames
    for got, want in zip(results, reference):
        assert got.timestamp == want.timestamp and torch.equal(got.boxes, want.detections.boxes)
        assert got.to_dict()["frame"] == want.index
    streamed = model.predict(str(clip), score=SCORE, stream=True)
    assert not isinstance(streamed, list) and next(iter(streamed)).frame == 0


def test_a_recipe_gives_an_untrained_model_and_training_overrides_are_the_clis(monkeypatch, tmp_path):
    untrained = detzoo.load("ssd300_mobilenetv2")
    assert untrained.class_names is None and untrained.num_classes == 80 and untrained.checkpoint is None
    assert untrained.info().model == "ssd300_mobilenetv2"
    with pytest.raises(ConfigError, match="untrained"):
        untrained.predict(np.zeros((8, 8, 3), np.uint8), channels="rgb")
    with pytest.raises(ConfigError, match="train__epochs=3"):
        untrained.train(data="x", epochs=3)
    seen = {}

    class Stop(Exception):
        pass

    def fake_run_training(source, overrides=(), resume=None):
        seen["config"] = load_config(source, overrides)
        raise Stop  # before any training

    monkeypatch.setattr("detzoo.engine.train.run_training", fake_run_training)
    with pytest.raises(Stop):
        untrained.train(data=tmp_path / "train.json", data__val="val.json", train__epochs=3,
                        model__input_size=160, data__augment__flip=0.0)
    cli = load_config("ssd300_mobilenetv2", [f"data.train={tmp_path / 'train.json'}", "data.val=val.json",
                                             "train.epochs=3", "model.input_size=160", "data.augment.flip=0.0"])
    assert seen["config"] == cli


def test_mode_switches_stay_those_of_a_module(model):
    assert model.train() is model and model.training and model.model.training
    assert model.train(False) is model and not model.model.training
    assert model.eval() is model and not model.training


def test_training_from_a_checkpoint_starts_from_its_weights(workdir, coco128, tmp_path):
    """A few steps on coco128 (80 classes) from the 3-class checkpoint: its weights start the run (head re-made),
    the handle then holds the new model."""
    handle = detzoo.load(workdir / "best.pt")
    run = handle.train(data=coco128, train__max_steps=2, train__batch_size=4, data__workers=0,
                       train__output=str(tmp_path), train__name="ft", train__warmup_epochs=0.0)
    assert run == tmp_path / "ft" and handle.checkpoint == run / "last.pt" and len(handle.class_names) == 80
    config = load_config(str(run / "config.yaml"))
    assert config.model.weights == str(workdir / "best.pt") and config.model.input_size == 128
    assert len(handle.predict(workdir / "photos")) == 3


@pytest.fixture(scope="module")
def trained_model(trained_checkpoint, trained_subset, tmp_path_factory):
    """The briefly trained 80-class model (conftest; a copy: exports land beside it) and its 8 images as a COCO
    dataset."""
    checkpoint = tmp_path_factory.mktemp("trained") / "model.pt"
    shutil.copy(trained_checkpoint, checkpoint)
    return checkpoint, trained_subset[0]


def test_val_is_detzoo_eval(trained_model, tmp_path, capsys):
    checkpoint, data = trained_model
    assert main(["eval", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "cli"), "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    evaluation = detzoo.load(checkpoint, workers=0).val(data, out=tmp_path / "api")
    assert evaluation.report in printed and evaluation.score == evaluation.metrics["mAP"] > 0
    assert (tmp_path / "api" / "detections.json").read_bytes() == (tmp_path / "cli" / "detections.json").read_bytes()
    assert sorted(p.name for p in evaluation.pictures) == sorted(p.name for p in (tmp_path / "cli").glob("*.png"))


@pytest.mark.slow
def test_export_and_quantize_then_predict_with_the_files(trained_model, tmp_path, workdir):
    checkpoint, data = trained_model
    handle = detzoo.load(checkpoint, workers=0)
    onnx = handle.export(tmp_path / "model.onnx", check_images=data / "val2017", check_count=2)
    exported = detzoo.load(onnx, workers=0)
    assert exported.class_names == handle.class_names and exported.info().model == "ssd300_mobilenetv2"
    torch_results, onnx_results = (m.predict(workdir / "photos", score=0.05) for m in (handle, exported))
    for a, b in zip(torch_results, onnx_results):  # ONNX Runtime vs PyTorch: checked by export to its tolerance
        assert a.names == b.names
    report = exported.quantize(data, calibration_images=4, batch_size=4)
    assert report.path == tmp_path / "model.int8.onnx" and report.path.is_file()
    assert "INT8 vs FP32" in report.table and report.evaluation.startswith("8 image(s)")
    with pytest.raises(ConfigError, match="cannot be trained"):
        exported.train(data=data)


def test_track_is_the_predictors_track_as_results(trained_checkpoint, workdir, coco128):
    """``Model.track`` yields what ``Predictor.track`` does, frame by frame, as Results with track ids and counts
    (the briefly trained model of conftest.py, on a clip of images it trained on, so that tracks start)."""
    clip = workdir / "track.mp4"
    frames = write_clip(clip, photos(coco128, 2, size=(320, 240)), hold=3)
    line, score = "0,120,320,120", 0.05
    model = detzoo.load(trained_checkpoint, workers=0)
    results = model.track(str(clip), score=score, lines=[line])
    predictor = Predictor.from_file(trained_checkpoint, workers=0)
    tracking = predictor.track(str(clip), SelectOptions(score_threshold=score), lines=[line])
    reference = list(tracking)
    tracking.close()
    assert len(results) == len(reference) == frames
    assert sum(len(r) for r in results) > 0
    for got, want in zip(results, reference):
        assert got.frame == want.index and torch.equal(got.boxes, want.detections.boxes)
        assert torch.equal(got.track_ids, want.detections.track_ids) and got.counts == want.counts
        assert got.to_dict()["counts"] == want.record()["counts"]
        assert [d["track_id"] for d in got.to_dict()["detections"]] == got.track_ids.tolist()
    assert results[0].file_name == "track_000000.jpg"
    with pytest.raises(ConfigError, match="a camera or stream never ends"):
        model.track(0)
