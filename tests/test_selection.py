"""Selection settings chosen at prediction time (score threshold, NMS IoU, cap, classes) for every zoo model,
through the PyTorch backend and through ONNX files that end with NMS."""

import functools

import pytest
import torch
from torchvision.ops import box_iou

from detzoo.common.errors import ConfigError
from detzoo.engine.inference import TorchBackend
from detzoo.export.onnx_export import export_onnx
from detzoo.models import create_model, list_models
from detzoo.models.registry import model_options
from detzoo.models.selection import SelectOptions
from detzoo.predict import Predictor, list_images

CLASSES = ["a", "b", "c"]
ALL = 10_000  # a cap no test image reaches (1000 proposals x 3 classes at most), so that caps cut nothing


@functools.cache
def _predictor(name: str) -> Predictor:
    torch.manual_seed(0)
    options = {"input_size": 128} if "input_size" in model_options(name) else {}
    # random weights: focal-loss heads start at their prior (~0.01), so the threshold is lowered to see boxes
    model = create_model(name, num_classes=len(CLASSES), score_thresh=0.001, **options).eval()
    return Predictor(TorchBackend(model), CLASSES, batch_size=2)


@pytest.fixture(scope="module")
def paths(coco128):
    """Two real images: a batch with two sizes (each image's own selection), kept small for CPU time."""
    return list_images(coco128 / "val2017")[:2]


def _run(predictor, paths, **settings):
    return list(predictor.predict_paths(paths, SelectOptions(**settings) if settings else None))


def _rows(det, keep=None, cap=None) -> list[tuple]:
    """Detections as a sorted list of (score, label, box): equal scores may come in either order."""
    keep = torch.ones(len(det), dtype=torch.bool) if keep is None else keep
    rows = [(s, lab, *b) for s, lab, b in zip(det.scores[keep].tolist(), det.labels[keep].tolist(),
                                               det.boxes[keep].tolist())]
    return sorted(rows[:cap])


def _reference(predictor, paths, **attributes):
    """The model run with its own selection attributes set directly (what the options must amount to)."""
    holder = predictor.backend.model.selection
    saved = {key: getattr(holder, key) for key in attributes}
    for key, value in attributes.items():
        setattr(holder, key, value)
    try:
        return list(predictor.predict_paths(paths))
    finally:
        for key, value in saved.items():
            setattr(holder, key, value)


@pytest.mark.parametrize("name", list_models())
def test_every_model_honours_the_options(name, paths):
    """Every zoo model names the module that holds its selection settings, and a call's options reach it."""
    predictor = _predictor(name)
    holder = predictor.backend.model.selection
    own = (holder.score_thresh, holder.nms_thresh, holder.detections_per_img)
    (det,) = _run(predictor, paths[:1], score_threshold=0.002, max_detections=2, classes=(2,))
    assert 0 < len(det) <= 2 and (det.labels == 2).all() and (det.scores >= 0.002).all()
    assert (holder.score_thresh, holder.nms_thresh, holder.detections_per_img) == own


@pytest.mark.parametrize("name", ["ssd300_mobilenetv2", "faster_rcnn_r50_fpn"])  # one of each selection module
def test_options_select_what_they_say(name, paths):
    predictor = _predictor(name)
    holder = predictor.backend.model.selection
    own = (holder.score_thresh, holder.nms_thresh, holder.detections_per_img)
    everything = _run(predictor, paths, max_detections=ALL)
    assert all(len(d) < ALL for d in everything) and sum(len(d) for d in everything) > 10
    cut = float(torch.cat([d.scores for d in everything]).median())
    strict = _run(predictor, paths, score_threshold=cut, iou_threshold=0.3)
    assert all(_rows(a) == _rows(b) for a, b in zip(strict, _reference(predictor, paths, score_thresh=cut,
                                                                          nms_thresh=0.3)))
    for det in strict:
        assert (det.scores >= cut).all()
        for label in det.labels.unique():  # no two boxes of a class overlap more than the IoU threshold
            iou = box_iou(det.boxes[det.labels == label], det.boxes[det.labels == label]).fill_diagonal_(0)
            assert iou.numel() == 0 or iou.max() <= 0.3 + 1e-6
    # the cap keeps the best detections (it applies after NMS, so the NMS is the same as without it)
    for capped, full in zip(_run(predictor, paths, max_detections=3), everything):
        assert _rows(capped) == _rows(full, cap=3)
    # a class filter comes before the cap: the five best detections of that class among all that survive NMS
    for filtered, full in zip(_run(predictor, paths, classes=(1,), max_detections=5), everything):
        assert _rows(filtered) == _rows(full, full.labels == 1, cap=5)
    assert (holder.score_thresh, holder.nms_thresh, holder.detections_per_img) == own  # put back after each call
    # the Predictor's own options are the default of every call; a call's own values win
    defaulted = Predictor(predictor.backend, CLASSES, options=SelectOptions(max_detections=2, classes=(0,)))
    for det in defaulted.predict_paths(paths, SelectOptions(max_detections=4)):
        assert len(det) <= 4 and (det.labels == 0).all()


def test_bad_options_get_one_clear_line():
    with pytest.raises(ConfigError, match="score_threshold must be in"):
        SelectOptions(score_threshold=1.5)
    with pytest.raises(ConfigError, match="iou_threshold must be in"):
        SelectOptions(iou_threshold=0)
    with pytest.raises(ConfigError, match="max_detections must be at least 1"):
        SelectOptions(max_detections=0)
    with pytest.raises(ConfigError, match="unknown class name.*dog.*the model knows: a, b, c"):
        SelectOptions.from_names(CLASSES, ["a", "dog"])
    assert SelectOptions.from_names(CLASSES, ["c", "a"]).classes == (2, 0)
    with pytest.raises(ConfigError, match=r"class index\(es\) \[7\] out of range 0..2"):
        Predictor(_predictor("ssd300_mobilenetv2").backend, CLASSES, options=SelectOptions(classes=(7,)))


@pytest.mark.parametrize("name", ["ssd300_mobilenetv2", "faster_rcnn_r50_fpn"])
def test_files_ending_with_nms_can_only_be_made_stricter(name, paths, tmp_path):
    """An SSD exported with --nms, a two-stage export: stricter settings select from the file's own detections
    exactly as they say; looser ones are refused in one line."""
    export_onnx(_predictor(name).backend.model, CLASSES, tmp_path / "m.onnx", in_graph_nms=True)
    predictor = Predictor.from_file(tmp_path / "m.onnx", device="cpu", batch_size=2)
    baked = _run(predictor, paths)
    cut = float(torch.cat([d.scores for d in baked]).quantile(0.3))
    for strict, full in zip(_run(predictor, paths, score_threshold=cut, max_detections=20, classes=(0, 2)), baked):
        keep = (full.scores >= cut) & ((full.labels == 0) | (full.labels == 2))
        assert _rows(strict) == _rows(full, keep, cap=20)
    for det in _run(predictor, paths, iou_threshold=0.2):
        for label in det.labels.unique():
            iou = box_iou(det.boxes[det.labels == label], det.boxes[det.labels == label]).fill_diagonal_(0)
            assert iou.numel() == 0 or iou.max() <= 0.2 + 1e-6
    for looser in (dict(score_threshold=0.0), dict(max_detections=500), dict(iou_threshold=0.95)):
        with pytest.raises(ConfigError, match="ends with NMS .* cannot be made looser"):
            _run(predictor, paths, **looser)
