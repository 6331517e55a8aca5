"""Mixed precision: bf16 autocast training steps on the CPU for every registered model (convolutions run
in bf16, the losses come out in fp32, deformable convolutions stay fp32), and the settings that cannot work
on a device are refused before any work."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import DeformConv2d

from detzoo.cli import main
from detzoo.common.config import ConfigError, load_config
from detzoo.common.distributed import DistInfo
from detzoo.engine.train import check_precision_and_bn
from detzoo.engine.trainer import autocast
from detzoo.models import create_model, list_models


def _batch(model, size: int = 2) -> tuple[torch.Tensor, list[dict]]:
    height, width = model.preprocess.size
    if model.preprocess.resize == "keep_aspect":  # two-stage models: a small image is enough
        height, width = 256, 320
    images = torch.rand(size, 3, height, width)
    boxes = torch.tensor([[0.1 * width, 0.2 * height, 0.6 * width, 0.7 * height],
                          [0.5 * width, 0.1 * height, 0.9 * width, 0.4 * height]])
    targets = [{"boxes": boxes[: i + 1], "labels": torch.tensor([0, 2][: i + 1]),
                "iscrowd": torch.zeros(i + 1, dtype=torch.bool)} for i in range(size)]
    return images, targets


def _record_output_dtypes(model: nn.Module, chosen) -> list[torch.dtype]:
    dtypes: list[torch.dtype] = []
    for module in model.modules():
        if chosen(module):
            module.register_forward_hook(lambda m, args, out: dtypes.append(out.dtype))
    return dtypes


def _is_deformable(module: nn.Module) -> bool:
    """torchvision's DeformConv2d or a zoo wrapper around deform_conv2d (DCNv2)."""
    return isinstance(module, DeformConv2d) or "deform" in type(module).__name__.lower()


@pytest.mark.parametrize("name", list_models())
def test_bf16_autocast_training_steps_on_the_cpu(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3).train()
    images, targets = _batch(model)
    conv_dtypes = _record_output_dtypes(model, lambda m: type(m) is nn.Conv2d)
    deform_dtypes = _record_output_dtypes(model, _is_deformable)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    for _ in range(2):
        with autocast(torch.device("cpu"), "bf16"):
            losses = model.compute_loss(images, targets)
        loss = sum(losses.values())
        assert all(v.dtype == torch.float32 for v in losses.values()), {k: v.dtype for k, v in losses.items()}
        assert torch.isfinite(loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
        optimizer.step()
    assert torch.bfloat16 in conv_dtypes  # autocast really ran the convolutions in bf16
    assert all(d == torch.float32 for d in deform_dtypes)  # DCN (if any) keeps itself in fp32
    assert all(p.dtype == torch.float32 for p in params)  # master weights stay fp32
    assert any(not torch.equal(p, b) for p, b in zip(params, before))


def test_autocast_is_off_unless_asked():
    layer = nn.Linear(4, 4)
    with autocast(torch.device("cpu"), "none"):
        assert layer(torch.rand(2, 4)).dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        assert layer(torch.rand(2, 4)).dtype == torch.bfloat16


def test_settings_that_cannot_work_on_the_device_are_refused():
    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match="train.amp=fp16 needs a CUDA device.*use train.amp=bf16"):
        check_precision_and_bn(load_config(None, ["train.amp=fp16"]), cpu, DistInfo())
    with pytest.raises(ConfigError, match="SyncBatchNorm has no CPU kernels"):
        check_precision_and_bn(load_config(None, ["train.sync_bn=true"]), cpu, DistInfo(0, 2))
    with pytest.raises(ConfigError, match="exclude each other"):
        check_precision_and_bn(load_config(None, ["train.sync_bn=true", "train.freeze_bn=true"]), cpu, DistInfo())
    check_precision_and_bn(load_config(None, ["train.amp=bf16", "train.sync_bn=true"]), cpu, DistInfo())  # one process


def test_fp16_on_the_cpu_is_one_clear_error_line(tmp_path, shapes, capsys):
    args = ["train", "ssd300_mobilenetv2", "train.device=cpu", "train.amp=fp16", f"data.train={shapes[0]}",
            f"train.output={tmp_path}"]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("error: train.amp=fp16 needs a CUDA device")
    assert not list(tmp_path.iterdir())  # refused before a run folder was made
