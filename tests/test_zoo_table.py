"""`detzoo models`: FLOPs counted by FlopCounterMode agree with a count made another way (forward hooks on every
convolution and linear layer), anchors are the model's own, the cards cover the registry, and the model table of the
README and docs/models.md is the command's output."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList

from detzoo.cli import main
from detzoo.models import create_model, list_models
from detzoo.models.cards import CARDS
from detzoo.models.dcn import ModulatedDeformConv2d
from detzoo.models.summary import count_flops, summarize

README = Path(__file__).resolve().parents[1] / "README.md"
MODELS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "models.md"


def _hook_flops(model: nn.Module, image_size: tuple[int, int]) -> int:
    """2 x MACs from each layer's output shape: conv out.numel() x in/groups x kh x kw; linear out.numel() x in."""
    total = 0

    def conv_hook(module, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        groups = getattr(module, "groups", 1)
        total += 2 * output.numel() * module.in_channels // groups * kh * kw

    def linear_hook(module, inputs, output):
        nonlocal total
        total += 2 * output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, ModulatedDeformConv2d)):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            model.flop_forward(torch.zeros(1, 3, *image_size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return total


@pytest.fixture(scope="module")
def rows() -> dict:
    return {row.model: row for row in map(summarize, list_models())}


@pytest.mark.parametrize("name", list_models())
def test_flops_are_those_of_every_conv_and_linear_layer(name, rows):
    with torch.device("meta"):
        model = create_model(name, num_classes=CARDS[name].num_classes).eval()
    size = tuple(model.preprocess.size)
    counted = count_flops(model, size)
    assert counted == _hook_flops(model, size)  # integers: exact
    assert rows[name].gflops == counted / 1e9


def test_known_counts(rows):
    """Figures that other sources state: VGG16-SSD300 is 68.6 GFLOP (34.3 GMACs); Faster R-CNN's RPN has 3
    anchors per location on P2-P6 (strides 4..64) of the 768 x 1280 box."""
    assert round(rows["ssd_vgg16"].gflops, 1) == 68.6
    rpn = sum(3 * math.ceil(768 / s) * math.ceil(1280 / s) for s in (4, 8, 16, 32, 64))
    assert rows["faster_rcnn_r50_fpn"].anchors == rows["faster_rcnn_r50_fpn_dcn"].anchors == rpn == 245520
    assert rows["ssd300_mobilenetv2"].anchors == 1917 and rows["ssdlite_mobilenetv2"].anchors == 3000
    # the DCN model adds the 13 offset/mask convs' weights to the plain model's
    assert rows["faster_rcnn_r50_fpn_dcn"].parameters > rows["faster_rcnn_r50_fpn"].parameters


def test_faster_rcnn_anchor_boxes_are_the_rpns():
    model = create_model("faster_rcnn_r50_fpn", num_classes=3).eval()
    images = torch.zeros(1, 3, 128, 160)
    features = list(model.backbone(images).values())
    real = model.rpn.anchor_generator(ImageList(images, [(128, 160)]), features)[0]
    assert torch.equal(model.anchor_boxes((128, 160)), real)


def test_every_zoo_model_has_a_card():
    assert set(CARDS) == set(list_models())


def test_models_json(capsys):
    assert main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [row["model"] for row in data["models"]] == list_models()
    assert all(row["gflops"] > 0 and row["parameters"] > 0 for row in data["models"])
    assert "FlopCounterMode" in data["note"]


def test_readme_model_table_is_the_commands_output(capsys):
    assert main(["models", "--markdown"]) == 0
    table = capsys.readouterr().out.strip()
    assert table in README.read_text(), "regenerate the README's model table: detzoo models --markdown"
    assert table in MODELS_PAGE.read_text(), "regenerate docs/models.md's model table: detzoo models --markdown"
