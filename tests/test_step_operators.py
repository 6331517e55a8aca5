"""A training step of every SSD model dispatches the same operators at batch 2 and batch 32, with both losses:
nothing in it loops over images, and (on meta tensors, which hold no values) nothing reads a value back to
the host - ``.item()``, ``nonzero()``, a tensor in an ``if`` or a mask index would raise there. On a GPU each
of those is a wait for the device; a count that grows with the batch is a launch per image."""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from detzoo.common.config import load_config
from detzoo.data.loader import Batch
from detzoo.engine import trainer as trainer_module
from detzoo.engine.optim import build_optimizer
from detzoo.engine.trainer import StepModule, Trainer
from detzoo.models import create_model, list_models
from detzoo.models.registry import model_options
from detzoo.models.ssd import SSD

CLASSES = 3
SSD_MODELS = [name for name in list_models() if "loss" in model_options(name)]  # the SSD loss's choice


class OperatorCount(TorchDispatchMode):
    """How many times each ATen operator is dispatched (forward, loss, backward and optimiser alike)."""

    def __init__(self):
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))


class MetaSGD(torch.optim.Optimizer):
    """SGD with momentum that honours ``found_inf`` like torch's fused SGD, in ``_foreach`` operators (the
    fused kernel has no meta implementation). Its operators, like the fused kernel's, depend on the
    parameters only, never on the batch."""

    _step_supports_amp_scaling = True

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.9):
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self):
        keep = 1.0 - self.found_inf  # a tensor: the step is scaled by 0 or 1 on the device
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            buffers = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p)) for p in params]
            change = torch._foreach_add(torch._foreach_mul(buffers, group["momentum"] - 1.0),
                                        [p.grad for p in params])
            torch._foreach_mul_(change, keep)
            torch._foreach_add_(buffers, change)
            update = torch._foreach_mul(buffers, -group["lr"])
            torch._foreach_mul_(update, keep)
            torch._foreach_add_(params, update)


def _batch(size: int, side: int) -> Batch:
    """Images with 0, 1, 2 or 3 objects (the third a crowd box) in turn."""
    boxes = torch.tensor([[0.1, 0.2, 0.6, 0.7], [0.5, 0.1, 0.9, 0.4], [0.0, 0.0, 0.5, 0.5]]) * side
    targets = [{"boxes": boxes[: i % 4], "labels": torch.tensor([0, 2, 1])[: i % 4],
                "iscrowd": torch.tensor([False, False, True])[: i % 4]} for i in range(size)]
    images = torch.randint(0, 255, (size, 3, side, side), dtype=torch.uint8)
    return Batch(images, targets, [(side, side)] * size)


def _step_operators(name: str, loss: str, batch_size: int, device: str, tmp_path, options: dict) -> Counter:
    """The operators of one ``Trainer.train_step`` (after a first step, which creates optimiser state)."""
    torch.manual_seed(0)
    with torch.device(device):
        model = create_model(name, num_classes=CLASSES, loss=loss, **options)
    assert isinstance(model, SSD)
    config = load_config(None, [f"train.batch_size={batch_size}"])
    optimizer = MetaSGD(model.parameters()) if device == "meta" else build_optimizer(model, config.train, batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    trainer = Trainer(config, model, StepModule(model), None, None, optimizer, scheduler, torch.device(device),
                      tmp_path, ["a", "b", "c"])
    trainer.set_train_mode()
    batch = _batch(batch_size, model.preprocess.size[0])
    batch.images = batch.images.to(device)
    trainer.train_step(batch)
    with OperatorCount() as counter:
        trainer.train_step(batch)
    return counter.counts


@pytest.mark.parametrize("loss", ["focal", "softmax"])
@pytest.mark.parametrize("name", SSD_MODELS)
def test_a_training_step_dispatches_the_same_operators_at_any_batch_size(name, loss, tmp_path, monkeypatch):
    """On meta tensors (shapes only: batch 32 of a 640-px model costs nothing). torch.autocast refuses the
    meta device even when disabled; with train.amp=none the step's autocast is a no-op, so it is left out."""
    monkeypatch.setattr(trainer_module, "autocast", lambda device, amp: contextlib.nullcontext())
    small = _step_operators(name, loss, 2, "meta", tmp_path, {})
    large = _step_operators(name, loss, 32, "meta", tmp_path, {})
    assert small == large, (small - large) + (large - small)


@pytest.mark.parametrize("loss", ["focal", "softmax"])
def test_the_same_on_the_cpu_with_the_fused_optimizer(loss, tmp_path):
    """The real step on real tensors (fused SGD, autocast context, the step log) for the smallest model."""
    options = {"input_size": 64}  # 96 anchors: the smallest input the model takes
    small = _step_operators("ssd300_mobilenetv2", loss, 2, "cpu", tmp_path, options)
    large = _step_operators("ssd300_mobilenetv2", loss, 32, "cpu", tmp_path, options)
    assert small == large, (small - large) + (large - small)
    assert sum(small.values()) > 1000  # the whole step was counted: forward, backward, optimiser


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("loss", ["focal", "softmax"])
def test_a_cuda_training_step_never_waits_for_the_gpu(loss, tmp_path):
    """With CUDA's synchronisation check set to "error", a whole step (pinned batch copied in, forward, loss,
    backward, the non-finite check, the fused optimiser's step, the EMA) raises at the first wait."""
    from detzoo.engine.ema import build_ema

    torch.manual_seed(0)
    model = create_model("ssd300_mobilenetv2", num_classes=CLASSES, loss=loss).cuda()
    config = load_config(None, ["train.batch_size=8", "train.grad_clip=10.0"])
    optimizer = build_optimizer(model, config.train, 8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    trainer = Trainer(config, model, StepModule(model), None, None, optimizer, scheduler, torch.device("cuda"),
                      tmp_path, ["a", "b", "c"], ema=build_ema(model, 0.99, 10))
    trainer.set_train_mode()
    batch = _batch(8, model.preprocess.size[0]).pin_memory()
    trainer.train_step(batch)  # the first step makes the optimiser's state and the cached constants
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            trainer.train_step(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.collect() is not None and trainer.nonfinite_in_row == 0
