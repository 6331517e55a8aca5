"""The SSD family's parts: anchor counts and parity with torchvision / pytorch-ssd, backbones, FPN, the
weight-shared head, and transfer learning across class counts for every SSD zoo entry."""

import itertools
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from detzoo.common.config import ConfigError
from detzoo.models import create_model, list_models
from detzoo.models.backbones.mobilenet_v1 import MobileNetV1Features
from detzoo.models.heads import prior_bias
from detzoo.models.weights import load_transfer_weights

EXPECTED_ANCHORS = {"ssd300_mobilenetv2": 1917, "ssd_mobilenetv1_fpn": 51150, "ssd_resnet50_fpn": 51150,
                    "ssd_vgg16": 8732, "ssdlite_mobilenetv2": 3000}
SSD_MODELS = [m for m in list_models() if m.startswith("ssd")]
SMALL = {"ssd_mobilenetv1_fpn": {"input_size": 128}, "ssd_resnet50_fpn": {"input_size": 128}}
_DEFAULT_SIZE: dict[str, nn.Module] = {}


def default_size_model(name: str):
    """The zoo entry at its recipe input size (built once per test session)."""
    if name not in _DEFAULT_SIZE:
        _DEFAULT_SIZE[name] = create_model(name, num_classes=3).eval()
    return _DEFAULT_SIZE[name]


def test_every_ssd_entry_has_an_expected_anchor_count():
    assert sorted(SSD_MODELS) == sorted(EXPECTED_ANCHORS)


@pytest.mark.parametrize("name", SSD_MODELS)
def test_anchor_counts(name):
    # at the recipe's input size (the heads' outputs match the anchors: test_models trains every entry)
    assert default_size_model(name).anchors.shape == (EXPECTED_ANCHORS[name], 4)


def test_ssd_vgg16_default_boxes_equal_torchvision():
    """torchvision's ssd300_vgg16 generator (clip=True clips width/height in centre form, not centres)."""
    generator = DefaultBoxGenerator([[2], [2, 3], [2, 3], [2, 3], [2], [2]],
                                    scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05], steps=[8, 16, 32, 64, 100, 300])
    maps = [torch.zeros(1, 1, s, s) for s in (38, 19, 10, 5, 3, 1)]
    expected = generator(ImageList(torch.zeros(1, 3, 300, 300), [(300, 300)]), maps)[0]
    ours = default_size_model("ssd_vgg16").anchors
    assert ours.shape == expected.shape == (8732, 4)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-4)  # float32 rounding of 300-px values
    assert (expected[:, 2] > 300).any()  # centres are not clipped: some boxes stick out, as in torchvision


def pytorch_ssd_priors() -> torch.Tensor:
    """pytorch-ssd's mb2-ssd-lite priors (recipes.md section 6), restated from its generator: per map
    (size, shrinkage, (min, max) px, ratios [2, 3]), centre-form boxes relative to 300 px, clamped to [0, 1]."""
    specs = [(19, 16, 60, 105), (10, 32, 105, 150), (5, 64, 150, 195), (3, 100, 195, 240), (2, 150, 240, 285),
             (1, 300, 285, 330)]
    priors = []
    for size, shrinkage, small, big in specs:
        scale = 300 / shrinkage
        for row, col in itertools.product(range(size), repeat=2):
            cx, cy = (col + 0.5) / scale, (row + 0.5) / scale
            boxes = [(small / 300, small / 300), (math.sqrt(small * big) / 300,) * 2]
            for ratio in (2, 3):
                r = math.sqrt(ratio)
                boxes += [(small / 300 * r, small / 300 / r), (small / 300 / r, small / 300 * r)]
            priors += [[cx, cy, w, h] for w, h in boxes]
    priors = torch.tensor(priors).clamp(0.0, 1.0)
    return torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], dim=1) * 300


def test_ssdlite_priors_equal_pytorch_ssd():
    ours = default_size_model("ssdlite_mobilenetv2").anchors
    expected = pytorch_ssd_priors()
    assert ours.shape == expected.shape == (3000, 4)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-4)


def test_fpn_anchors_are_four_strides_with_two_scales_per_octave():
    anchors = default_size_model("ssd_mobilenetv1_fpn").anchors
    s, r = math.sqrt(2), math.sqrt(2)  # second scale of the octave; sqrt of the aspect ratio 2
    expected = []
    for size in (32, 32 * s):  # 4 x stride 8, then x 2^(1/2); ratios 1, 2, 0.5 (width / height)
        expected += [(size, size), (size * r, size / r), (size / r, size * r)]
    centre = 4.0  # (0 + 0.5) x stride 8
    wh = torch.tensor(expected)
    torch.testing.assert_close(anchors[:6], torch.cat([centre - wh / 2, centre + wh / 2], dim=1))
    last = anchors[-6]  # P7 (stride 128, 5 x 5 at 640): the last location, first anchor (512 px square)
    torch.testing.assert_close(last, torch.tensor([576.0 - 256, 576 - 256, 576 + 256, 576 + 256]))


def test_feature_pyramids_have_the_recipe_levels():
    expected = {"ssd300_mobilenetv2": [(576, 19), (1280, 10), (512, 5), (256, 3), (256, 2), (128, 1)],
                "ssdlite_mobilenetv2": [(576, 19), (1280, 10), (512, 5), (256, 3), (256, 2), (64, 1)],
                "ssd_vgg16": [(512, 38), (1024, 19), (512, 10), (256, 5), (256, 3), (256, 1)]}
    for name, levels in expected.items():
        model = default_size_model(name)
        with torch.no_grad():
            features = model.features(torch.zeros(1, 3, 300, 300))
        assert [(f.shape[1], f.shape[2]) for f in features] == levels, name
    with pytest.raises(ConfigError, match="multiple of 32"):
        create_model("ssd_mobilenetv1_fpn", num_classes=3, input_size=600)
    fpn = create_model("ssd_mobilenetv1_fpn", num_classes=3, input_size=256).eval()
    with torch.no_grad():
        assert [tuple(f.shape[1:]) for f in fpn.features(torch.zeros(1, 3, 256, 256))] == \
            [(256, 32, 32), (256, 16, 16), (256, 8, 8), (256, 4, 4), (256, 2, 2)]


def test_mobilenet_v1_is_the_paper_network():
    net = MobileNetV1Features().eval()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 27 and all(c.bias is None for c in convs)  # stem + 13 x (depthwise, pointwise)
    assert [c.groups > 1 for c in convs[1::2]] == [True] * 13
    assert all(isinstance(m, nn.ReLU6) for m in net.modules() if isinstance(m, (nn.ReLU, nn.ReLU6)))
    with torch.no_grad():
        outputs = net(torch.zeros(1, 3, 320, 320))
    assert [tuple(o.shape[1:]) for o in outputs] == [(256, 40, 40), (512, 20, 20), (1024, 10, 10)]


def test_vgg16_backbone_and_l2norm():
    model = default_size_model("ssd_vgg16")
    pools = [m for m in model.backbone.modules() if isinstance(m, nn.MaxPool2d)]
    assert [p.ceil_mode for p in pools] == [False, False, True, False]  # pool3 in ceil mode, no pool5
    torch.manual_seed(0)
    with torch.no_grad():
        conv4_3, conv5_3 = model.backbone(torch.rand(1, 3, 300, 300))
        level0 = model.neck([conv4_3, conv5_3])[0]
    assert conv4_3.shape[-2:] == (38, 38) and conv5_3.shape[-2:] == (19, 19)
    active = conv4_3.norm(dim=1) > 0
    norms = level0.norm(dim=1)[active]  # L2Norm with every scale at its initial 20
    assert active.sum() > 100
    torch.testing.assert_close(norms, torch.full_like(norms, 20.0))


def test_fpn_is_nearest_top_down_with_conv_bn_relu6_outputs():
    model = create_model("ssd_resnet50_fpn", num_classes=3, input_size=128).eval()
    fpn = model.neck
    torch.manual_seed(0)
    c3, c4, c5 = torch.randn(1, 512, 16, 16), torch.randn(1, 1024, 8, 8), torch.randn(1, 2048, 4, 4)
    with torch.no_grad():
        outputs = fpn([c3, c4, c5])
        top5 = fpn.inner_blocks[2](c5)
        top4 = fpn.inner_blocks[1](c4) + F.interpolate(top5, scale_factor=2, mode="nearest")
        top3 = fpn.inner_blocks[0](c3) + F.interpolate(top4, scale_factor=2, mode="nearest")
        p5 = fpn.layer_blocks[2](top5)
        expected = [fpn.layer_blocks[0](top3), fpn.layer_blocks[1](top4), p5]
        p6 = fpn.extra_blocks.convs[0](p5)
        expected += [p6, fpn.extra_blocks.convs[1](p6)]
    for got, want in zip(outputs, expected, strict=True):
        torch.testing.assert_close(got, want)
    for block in [*fpn.layer_blocks, *fpn.extra_blocks.convs]:
        assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU6]
    assert [b.stride for b in (fpn.extra_blocks.convs[0][0], fpn.extra_blocks.convs[1][0])] == [(2, 2), (2, 2)]


def test_weight_shared_head_shares_convs_and_keeps_batch_norm_per_level():
    model = create_model("ssd_mobilenetv1_fpn", num_classes=3, input_size=128).eval()
    head = model.head
    assert len(head.class_tower.convs) == len(head.box_tower.convs) == 4
    assert len(head.class_tower.norms) == 5 and head.class_predictor.out_channels == 6 * 3
    torch.testing.assert_close(head.class_predictor.bias, torch.full((18,), prior_bias()))
    torch.manual_seed(0)
    features = [torch.randn(1, 256, s, s) for s in (16, 8, 4, 2, 1)]
    per_level = [s * s * 6 for s in (16, 8, 4, 2, 1)]
    with torch.no_grad():
        boxes, logits = head(features)
        head.class_tower.norms[2][0].bias.add_(1.0)  # level 2's own norm: only level 2's outputs move
        _, moved = head(features)
        head.class_tower.convs[0].weight.mul_(2.0)  # a shared conv: every level moves
        _, all_moved = head(features)
    changed = [not torch.equal(a, b) for a, b in zip(logits.split(per_level, 1), moved.split(per_level, 1))]
    assert changed == [False, False, True, False, False]
    assert all(not torch.equal(a, b) for a, b in zip(moved.split(per_level, 1), all_moved.split(per_level, 1)))
    assert boxes.shape == (1, sum(per_level), 4)


# the parameters that depend on the class count: the last conv of each class predictor
CLASS_DEPENDENT = {"ssd300_mobilenetv2": r"head\.class_layers\.\d\.3\.(weight|bias)",
                   "ssdlite_mobilenetv2": r"head\.class_layers\.([0-4]\.3|5)\.(weight|bias)",
                   "ssd_vgg16": r"head\.class_layers\.\d\.(weight|bias)",
                   "ssd_mobilenetv1_fpn": r"head\.class_predictor\.(weight|bias)",
                   "ssd_resnet50_fpn": r"head\.class_predictor\.(weight|bias)"}
LEVELS = {"ssd_mobilenetv1_fpn": 1, "ssd_resnet50_fpn": 1}  # one shared predictor; the others have 6 levels


@pytest.mark.parametrize("name", SSD_MODELS)
def test_transfer_drops_exactly_the_class_dependent_parameters(name, tmp_path):
    torch.manual_seed(0)
    source = create_model(name, num_classes=3, **SMALL.get(name, {}))
    path = tmp_path / "source.pt"
    torch.save({"model": source.state_dict()}, path)
    target = create_model(name, num_classes=5, **SMALL.get(name, {}))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    dropped = load_transfer_weights(target, str(path))
    assert all(re.fullmatch(CLASS_DEPENDENT[name], k) for k in dropped), dropped
    assert len(dropped) == 2 * LEVELS.get(name, 6)
    for key, value in target.state_dict().items():
        expected = before[key] if key in dropped else source.state_dict()[key]
        assert torch.equal(value, expected), key


def test_ssd_vgg16_can_train_with_the_papers_softmax_loss():
    model = create_model("ssd_vgg16", num_classes=3, loss="softmax")
    assert model.loss.kind == model.postprocess.score_kind == "softmax" and model.loss.neg_pos_ratio == 3.0
    assert [layer.out_channels for layer in model.head.class_layers] == [n * 4 for n in (4, 6, 6, 6, 4, 4)]
    assert all(torch.equal(layer.bias, torch.zeros_like(layer.bias)) for layer in model.head.class_layers)
