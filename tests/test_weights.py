"""Backbone weights from local torchvision-format files, transfer learning, freezing."""

import pytest
import torch
import torchvision

from detzoo.common.config import load_config
from detzoo.engine.train import prepare_model
from detzoo.models import create_model
from detzoo.models.weights import WeightsError, load_backbone_weights, load_transfer_weights


def test_torchvision_mobilenet_v2_file_loads_into_the_backbone(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.mobilenet_v2()
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(reference.state_dict(), path)  # the layout of torchvision's released file
    model = create_model("ssd300_mobilenetv2", num_classes=3)
    load_backbone_weights(model, str(path))
    for key, value in reference.features.state_dict().items():
        assert torch.equal(model.backbone.features.state_dict()[key], value), key


def test_wrong_backbone_file_lists_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    model = create_model("ssd300_mobilenetv2", num_classes=3)
    with pytest.raises(WeightsError, match=r"(?s)missing keys: features\.0\.0\.weight.*"):
        load_backbone_weights(model, str(path))
    with pytest.raises(WeightsError, match="neither a file nor a torchvision weights name"):
        load_backbone_weights(model, "NoSuch_Weights.IMAGENET1K_V1")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="cannot load weights"):
        load_backbone_weights(model, str(tmp_path / "junk.pth"))


def test_transfer_drops_exactly_the_class_dependent_parameters(tmp_path):
    torch.manual_seed(0)
    source = create_model("ssd300_mobilenetv2", num_classes=80)
    path = tmp_path / "coco.pt"
    torch.save({"model": source.state_dict()}, path)
    target = create_model("ssd300_mobilenetv2", num_classes=4)
    dropped = load_transfer_weights(target, str(path))
    # the last conv of each of the 6 class predictors: weight and bias
    assert len(dropped) == 12 and all(k.startswith("head.class_layers.") for k in dropped)
    for key, value in target.state_dict().items():
        if key not in dropped:
            assert torch.equal(value, source.state_dict()[key]), key
    same = create_model("ssd300_mobilenetv2", num_classes=80)
    assert load_transfer_weights(same, str(path)) == []


def test_freeze_backbone(tmp_path):
    config = load_config("ssd300_mobilenetv2", ["train.freeze=backbone", "model.input_size=96"])
    model = prepare_model(config, 3, log=lambda *a: None)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
