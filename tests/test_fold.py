"""BatchNorm folded into the convolutions for inference (engine.inference.fold_batch_norms): the same function
for every zoo model, and the Predictor's backend runs folded."""

import copy

import pytest
import torch

from detzoo.engine.inference import fold_batch_norms, inference_backend
from detzoo.models import create_model, list_models

SMALL = {"ssd_mobilenetv1_fpn": {"input_size": 128}, "ssd_resnet50_fpn": {"input_size": 128},
         "faster_rcnn_r50_fpn": {"input_size": 128}, "faster_rcnn_r50_fpn_dcn": {"input_size": 128}}
NORMS = (torch.nn.BatchNorm2d, __import__("torchvision").ops.FrozenBatchNorm2d)


def with_trained_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (fresh ones are the identity, which folds into
    nothing), kept moderate so activations keep their scale through the network."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, NORMS):
            channels = module.running_mean.numel()
            module.running_mean.copy_(0.1 * torch.randn(channels, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(channels, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(channels, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(channels, generator=generator))
    return model.eval()


@pytest.mark.parametrize("name", list_models())
def test_folding_keeps_the_function(name):
    """Folding rescales each conv's weights by gamma / sqrt(var + eps) and moves the shift into its bias: a few
    float32 roundings (relative 2^-24 each) per layer. Through at most 100 layers that is ~1e-5 of the
    activations' scale; 1e-4 of the output's largest magnitude is allowed."""
    torch.manual_seed(0)
    model = with_trained_statistics(create_model(name, num_classes=3, **SMALL.get(name, {})))
    folded = copy.deepcopy(model)
    norms = sum(isinstance(m, NORMS) for m in model.modules())
    count = fold_batch_norms(folded)
    assert sum(isinstance(m, NORMS) for m in folded.modules()) == norms - count
    assert count > 0 or norms == 0  # ssd_vgg16 has no BatchNorm
    height, width = (128, 160) if model.preprocess.resize == "keep_aspect" else model.preprocess.size
    images = torch.rand(2, 3, height, width)
    with torch.inference_mode():
        reference = model(images) if hasattr(model, "anchors") else list(model.backbone(images).values())
        outputs = folded(images) if hasattr(model, "anchors") else list(folded.backbone(images).values())
    for a, b in zip(reference, outputs):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-4 * a.abs().max().item())


def test_the_inference_backend_runs_folded_in_nhwc():
    model = with_trained_statistics(create_model("ssd300_mobilenetv2", num_classes=3, input_size=128))
    backend = inference_backend(model, "cpu")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backend.model.backbone.modules())
    assert backend.channels_last and backend.precision == "fp32"
