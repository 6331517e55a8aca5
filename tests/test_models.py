"""Checks every registered model gets for free: forward, backward, eval detections, save/load, learning."""

import pytest
import torch

from detzoo.models import create_model, list_models
from detzoo.models.registry import model_options

MODELS = list_models()
SMALL_CLASSES = 3
# build options that keep a model fast here (the 640-px FPN models at 128 px: P3..P7 = 16 .. 1)
FAST_OPTIONS = {"ssd_mobilenetv1_fpn": {"input_size": 128}, "ssd_resnet50_fpn": {"input_size": 128}}


def _build(name: str):
    return create_model(name, num_classes=SMALL_CLASSES, **FAST_OPTIONS.get(name, {}), **_fast_options(name))


def _input(model, batch=2):
    height, width = model.preprocess.size
    if model.preprocess.resize == "keep_aspect":  # Faster R-CNN: test on a small image
        height, width = 128, 160
    return torch.rand(batch, 3, height, width)


def _targets(images, labels=(0, 2)):
    _, _, h, w = images.shape
    targets = []
    for i in range(images.shape[0]):
        boxes = torch.tensor([[0.1 * w, 0.2 * h, 0.6 * w, 0.7 * h], [0.5 * w, 0.1 * h, 0.9 * w, 0.4 * h]])
        targets.append({"boxes": boxes[: i + 1], "labels": torch.tensor(labels[: i + 1]),
                        "iscrowd": torch.zeros(i + 1, dtype=torch.bool)})
    return targets


def _fast_options(name: str) -> dict:
    """Two-stage models train their box head on 64 instead of 512 sampled RoIs per image here (CPU time)."""
    return {"roi_batch_size": 64} if "roi_batch_size" in model_options(name) else {}


@pytest.fixture(scope="module", params=MODELS)
def model(request):
    torch.manual_seed(0)
    return _build(request.param)


def test_registry_lists_the_zoo():
    assert "ssd300_mobilenetv2" in MODELS
    with pytest.raises(Exception, match="did you mean 'ssd300_mobilenetv2'"):
        create_model("ssd300_mobilenet_v2")
    with pytest.raises(Exception, match="has no option"):
        create_model("ssd300_mobilenetv2", no_such_option=1)
    assert "score_thresh" in model_options("ssd300_mobilenetv2")


def test_forward_backward(model):
    model.train()
    images = _input(model)
    losses = model.compute_loss(images, _targets(images))
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    model.zero_grad(set_to_none=True)


def test_eval_detections(model):
    model.eval()
    images = _input(model)
    with torch.no_grad():
        detections = model.detect(images, [tuple(images.shape[-2:])] * 2)
    assert len(detections) == 2
    for det in detections:
        assert det["boxes"].shape[1] == 4 and det["boxes"].shape[0] == det["scores"].shape[0] <= 100
        assert det["labels"].max().item() < SMALL_CLASSES if len(det["labels"]) else True


def test_save_load_round_trip(model, tmp_path):
    model.eval()
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    clone = _build(model.zoo_name).eval()
    clone.load_state_dict(torch.load(path, weights_only=True))
    images = _input(model, batch=1)
    with torch.no_grad():
        for a, b in zip(_raw(model, images), _raw(clone, images)):
            torch.testing.assert_close(a, b)


def _raw(model, images):
    if hasattr(model, "anchors"):
        return model(images)
    return [d["boxes"] for d in model.detect(images)]


def test_a_few_steps_lower_the_loss(model):
    """Adam, being insensitive to the gradient's scale, suits every entry: random-weight Faster R-CNNs under
    frozen batch norm start with gradient norms in the hundreds, ssdlite's Xavier heads in the thousands."""
    torch.manual_seed(0)
    model.train()
    images = _input(model)
    targets = _targets(images)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    first = None
    for _ in range(4):  # few steps: the 300-px VGG16 is slow on a 2-core CPU
        loss = sum(model.compute_loss(images, targets).values())
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    final = sum(model.compute_loss(images, targets).values()).item()
    assert final < 0.9 * first
