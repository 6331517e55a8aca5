"""torch.hub entry points (hubconf.py at the repository root), loaded from the local checkout."""

import importlib.util
from pathlib import Path

import pytest
import torch

import detzoo
from detzoo.common.checkpoints import model_payload
from detzoo.common.config import load_config
from detzoo.models import create_model, list_models

ROOT = Path(__file__).resolve().parents[1]


def test_every_zoo_model_is_a_hub_entry():
    """What ``torch.hub.list`` returns: the public callables of hubconf.py (it lists GitHub repos only)."""
    spec = importlib.util.spec_from_file_location("detzoo_hubconf", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = {name for name in dir(hubconf) if callable(getattr(hubconf, name)) and not name.startswith("_")}
    assert entries == set(list_models())
    assert hubconf.dependencies == ["torch", "torchvision"]


def test_hub_load_with_a_checkpoint_gives_the_trained_model(tmp_path):
    torch.manual_seed(0)
    config = load_config("ssd300_mobilenetv2", ["model.input_size=128", "model.score_thresh=0.01"])
    trained = create_model("ssd300_mobilenetv2", num_classes=3, **config.model.model_kwargs()).eval()
    path = tmp_path / "model.pt"
    torch.save(model_payload(trained, config.to_dict(), ["a", "b", "c"]), path)
    model = torch.hub.load(str(ROOT), "ssd300_mobilenetv2", source="local", weights=str(path))
    assert model.class_names == ["a", "b", "c"] and not model.training
    assert isinstance(model, detzoo.Model) and model.checkpoint == path  # the handle detzoo.load returns
    assert model.state_dict().keys() == trained.state_dict().keys()  # the detector's keys, no prefix
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        for a, b in zip(model(images), trained(images)):
            torch.testing.assert_close(a, b)
    with pytest.raises(TypeError, match="come from the checkpoint"):
        torch.hub.load(str(ROOT), "ssd300_mobilenetv2", source="local", weights=str(path), input_size=300)


def test_hub_load_without_weights_builds_a_fresh_model():
    model = torch.hub.load(str(ROOT), "ssd300_mobilenetv2", source="local", num_classes=4, input_size=160)
    assert model.num_classes == 4 and model.preprocess.size == (160, 160) and model.class_names is None
