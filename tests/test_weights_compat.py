"""Weight files of other codebases load where they belong: torchvision ImageNet backbones (mobilenet_v2,
resnet50, vgg16), pytorch-ssd's MobileNetV2 / MobileNetV1 base nets and its whole mb2-ssd-lite model.

The foreign state dicts are built here with exactly the files' key layouts (pytorch-ssd's restated from its
network definitions) and distinct random values. The expected destination of every tensor comes from module
order, not from the key maps under test: both layouts list a network's layers (and each batch norm's
weight, bias, running mean, running variance, counter) in the same order.
"""

import pytest
import torch
from torchvision.models import mobilenet_v2, resnet50, vgg16

from detzoo.models import create_model
from detzoo.models.weights import WeightsError, load_backbone_weights, load_transfer_weights

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# MobileNetV2 (t, c, n, s), as both torchvision and pytorch-ssd define it
MOBILENET_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]
MOBILENET_V1 = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]


def _bn(prefix: str, channels: int) -> list[tuple[str, tuple]]:
    return [(f"{prefix}.{name}", () if name == "num_batches_tracked" else (channels,)) for name in BN]


def _inverted_residual(prefix: str, cin: int, cout: int, ratio: float) -> list[tuple[str, tuple]]:
    """pytorch-ssd's InvertedResidual: one flat ``conv`` Sequential of conv, BN, ReLU6, ..."""
    hidden = round(cin * ratio)
    if ratio == 1:
        return [(f"{prefix}.conv.0.weight", (hidden, 1, 3, 3)), *_bn(f"{prefix}.conv.1", hidden),
                (f"{prefix}.conv.3.weight", (cout, hidden, 1, 1)), *_bn(f"{prefix}.conv.4", cout)]
    return [(f"{prefix}.conv.0.weight", (hidden, cin, 1, 1)), *_bn(f"{prefix}.conv.1", hidden),
            (f"{prefix}.conv.3.weight", (hidden, 1, 3, 3)), *_bn(f"{prefix}.conv.4", hidden),
            (f"{prefix}.conv.6.weight", (cout, hidden, 1, 1)), *_bn(f"{prefix}.conv.7", cout)]


def pytorch_ssd_mobilenet_v2_layout(prefix: str = "") -> list[tuple[str, tuple]]:
    """Keys and shapes of ``MobileNetV2().features`` in pytorch-ssd (the mb2-imagenet-71_8.pth file)."""
    keys = [(f"{prefix}0.0.weight", (32, 3, 3, 3)), *_bn(f"{prefix}0.1", 32)]
    index, cin = 1, 32
    for t, c, n, _ in MOBILENET_V2:
        for _ in range(n):
            keys += _inverted_residual(f"{prefix}{index}", cin, c, t)
            index, cin = index + 1, c
    return keys + [(f"{prefix}18.0.weight", (1280, 320, 1, 1)), *_bn(f"{prefix}18.1", 1280)]


def pytorch_ssd_lite_layout(num_classes: int) -> dict[str, list[tuple[str, tuple]]]:
    """Keys and shapes of pytorch-ssd's mb2-ssd-lite, grouped by the part of our model they belong to."""
    extras, cin = [], 1280
    for e, (cout, ratio) in enumerate([(512, 0.2), (256, 0.25), (256, 0.5), (64, 0.25)]):
        extras += _inverted_residual(f"extras.{e}", cin, cout, ratio)
        cin = cout

    def headers(name: str, per_box: int) -> list[tuple[str, tuple]]:
        keys = []
        for level, c in enumerate([576, 1280, 512, 256, 256]):  # SeperableConv2d: dw conv (bias), BN, ReLU6, 1x1
            keys += [(f"{name}.{level}.0.weight", (c, 1, 3, 3)), (f"{name}.{level}.0.bias", (c,)),
                     *_bn(f"{name}.{level}.1", c), (f"{name}.{level}.3.weight", (6 * per_box, c, 1, 1)),
                     (f"{name}.{level}.3.bias", (6 * per_box,))]
        return keys + [(f"{name}.5.weight", (6 * per_box, 64, 1, 1)), (f"{name}.5.bias", (6 * per_box,))]

    return {"backbone.": pytorch_ssd_mobilenet_v2_layout("base_net."), "neck.": extras,
            "head.class_layers.": headers("classification_headers", num_classes + 1),
            "head.box_layers.": headers("regression_headers", 4)}


def pytorch_ssd_mobilenet_v1_layout() -> list[tuple[str, tuple]]:
    """Keys and shapes of pytorch-ssd's MobileNetV1(1001) (mobilenet_v1_with_relu_69_5.pth)."""
    keys = [("model.0.0.weight", (32, 3, 3, 3)), *_bn("model.0.1", 32)]
    cin = 32
    for k, (cout, _) in enumerate(MOBILENET_V1, start=1):
        keys += [(f"model.{k}.0.weight", (cin, 1, 3, 3)), *_bn(f"model.{k}.1", cin),
                 (f"model.{k}.3.weight", (cout, cin, 1, 1)), *_bn(f"model.{k}.4", cout)]
        cin = cout
    return keys + [("fc.weight", (1001, 1024)), ("fc.bias", (1001,))]


def random_state(layout: list[tuple[str, tuple]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randint(0, 1000, (), generator=g) if shape == () else torch.randn(shape, generator=g)
            for k, shape in layout}


def assert_lands_in_order(source: dict, source_keys: list[str], target: dict, target_keys: list[str]) -> None:
    """The i-th source tensor is the i-th target tensor (module order), for every tensor."""
    assert len(source_keys) == len(target_keys)
    for s, t in zip(source_keys, target_keys):
        assert torch.equal(source[s], target[t]), f"{s} should land in {t}"


def _backbone_keys(model) -> list[str]:
    return list(model.backbone.state_dict())


def _load_file(model, state, tmp_path, name="weights.pth"):
    path = tmp_path / name
    torch.save(state, path)
    load_backbone_weights(model, str(path))


@pytest.mark.parametrize("name", ["ssd300_mobilenetv2", "ssdlite_mobilenetv2"])
def test_torchvision_mobilenet_v2_file(name, tmp_path):
    state = mobilenet_v2().state_dict()
    model = create_model(name, num_classes=3)
    _load_file(model, state, tmp_path)
    features = [k for k in state if k.startswith("features.")]
    assert features == _backbone_keys(model)  # the classifier is the only thing dropped
    assert_lands_in_order(state, features, model.backbone.state_dict(), _backbone_keys(model))


def test_torchvision_resnet50_file(tmp_path):
    state = resnet50().state_dict()
    model = create_model("ssd_resnet50_fpn", num_classes=3, input_size=128)
    _load_file(model, state, tmp_path)
    kept = [k for k in state if not k.startswith("fc.")]
    assert kept == _backbone_keys(model)
    assert_lands_in_order(state, kept, model.backbone.state_dict(), _backbone_keys(model))


def test_torchvision_vgg16_file(tmp_path):
    with torch.device("meta"):
        layout = [(k, tuple(v.shape)) for k, v in vgg16().state_dict().items()]
    # real shapes for the features; the (dropped) classifier keeps its keys with small tensors
    state = random_state([(k, s if k.startswith("features.") else (2,)) for k, s in layout])
    model = create_model("ssd_vgg16", num_classes=3)
    _load_file(model, state, tmp_path)
    features = [k for k in state if k.startswith("features.")]
    assert len(features) == 26 and features == _backbone_keys(model)  # 13 convs: conv1_1 .. conv5_3
    assert_lands_in_order(state, features, model.backbone.state_dict(), _backbone_keys(model))


def test_pytorch_ssd_mobilenet_v2_base_net_file(tmp_path):
    layout = pytorch_ssd_mobilenet_v2_layout()
    assert layout[0][0] == "0.0.weight" and layout[-1][0] == "18.1.num_batches_tracked"
    state = random_state(layout)
    model = create_model("ssdlite_mobilenetv2", num_classes=3)
    _load_file(model, state, tmp_path, "mb2-imagenet-71_8.pth")
    loaded = model.backbone.state_dict()
    assert_lands_in_order(state, [k for k, _ in layout], loaded, _backbone_keys(model))
    # a few landings spelled out: the expansion-1 block, an expanded block, the last layer
    assert torch.equal(loaded["features.1.conv.1.weight"], state["1.conv.3.weight"])
    assert torch.equal(loaded["features.14.conv.1.0.weight"], state["14.conv.3.weight"])
    assert torch.equal(loaded["features.14.conv.3.running_var"], state["14.conv.7.running_var"])
    assert torch.equal(loaded["features.18.1.bias"], state["18.1.bias"])


def test_pytorch_ssd_mobilenet_v1_file(tmp_path):
    layout = pytorch_ssd_mobilenet_v1_layout()
    state = random_state(layout)
    model = create_model("ssd_mobilenetv1_fpn", num_classes=3, input_size=128)
    _load_file(model, state, tmp_path, "mobilenet_v1_with_relu_69_5.pth")
    kept = [k for k, _ in layout if not k.startswith("fc.")]
    assert_lands_in_order(state, kept, model.backbone.state_dict(), _backbone_keys(model))
    base_net = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    other = create_model("ssd_mobilenetv1_fpn", num_classes=3, input_size=128)
    _load_file(other, base_net, tmp_path, "base_net.pth")  # the base-net form, without "model."
    for key, value in other.backbone.state_dict().items():
        assert torch.equal(value, model.backbone.state_dict()[key])


@pytest.fixture(scope="module")
def voc_ssdlite():
    return create_model("ssdlite_mobilenetv2", num_classes=20)


def test_pytorch_ssd_lite_model_file(voc_ssdlite, tmp_path):
    groups = pytorch_ssd_lite_layout(num_classes=20)  # VOC: 21 logits with the background
    state = random_state([entry for layout in groups.values() for entry in layout])
    path = tmp_path / "mb2-ssd-lite-mp-0_686.pth"
    torch.save(state, path)
    assert load_transfer_weights(voc_ssdlite, str(path)) == []  # same class count: nothing dropped
    loaded = voc_ssdlite.state_dict()
    for prefix, layout in groups.items():
        ours = [k for k in loaded if k.startswith(prefix)]
        assert_lands_in_order(state, [k for k, _ in layout], loaded, ours)
    assert torch.equal(loaded["neck.blocks.3.conv.2.weight"], state["extras.3.conv.6.weight"])
    assert torch.equal(loaded["head.class_layers.5.bias"], state["classification_headers.5.bias"])
    assert torch.equal(loaded["head.box_layers.2.0.bias"], state["regression_headers.2.0.bias"])

    four = create_model("ssdlite_mobilenetv2", num_classes=4)  # fine-tuning it on 4 classes
    dropped = load_transfer_weights(four, str(path))
    assert dropped == sorted([f"head.class_layers.{k}.3.{p}" for k in range(5) for p in ("weight", "bias")]
                             + ["head.class_layers.5.bias", "head.class_layers.5.weight"])
    assert torch.equal(four.state_dict()["head.class_layers.2.0.weight"], state["classification_headers.2.0.weight"])


def test_wrong_files_get_a_clear_error(voc_ssdlite, tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(resnet50().state_dict(), path)
    model = create_model("ssd300_mobilenetv2", num_classes=3)
    with pytest.raises(WeightsError) as error:
        load_backbone_weights(model, str(path))
    message = str(error.value)
    assert str(path) in message and "missing keys: features.0.0.weight" in message
    assert "unexpected keys: bn1.bias" in message
    with pytest.raises(WeightsError, match=r"(?s)missing keys: backbone\..*unexpected keys: base_net\.0\.0\.weight"):
        # a pytorch-ssd MobileNetV2 model is not an SSD-FPN checkpoint
        layout = pytorch_ssd_lite_layout(20)
        torch.save(random_state(layout["backbone."]), tmp_path / "partial.pth")
        load_transfer_weights(create_model("ssd_mobilenetv1_fpn", num_classes=3, input_size=128),
                              str(tmp_path / "partial.pth"))
