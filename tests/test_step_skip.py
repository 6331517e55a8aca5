"""A step whose loss or gradient is not finite is skipped on the device (the fused optimisers' ``found_inf``):
weights, optimiser state and EMA exactly as before, even on the very first step (fused SGD would otherwise
keep uninitialised momentum buffers); the next good step is the step a fresh optimiser takes. The host hears
of it when the trainer collects its records: a warning, the count in a row, the error after
``train.max_nonfinite``."""

from __future__ import annotations

import pytest
import torch

from detzoo.common.config import load_config
from detzoo.common.errors import TrainingError
from detzoo.data.loader import Batch
from detzoo.engine.ema import build_ema
from detzoo.engine.optim import build_optimizer, step_unless
from detzoo.engine.trainer import StepModule, Trainer
from detzoo.models import create_model

SIDE = 64
CUDA = pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                         reason="needs a CUDA GPU")])


def _batch() -> Batch:
    images = torch.randint(0, 255, (2, 3, SIDE, SIDE), dtype=torch.uint8)
    targets = [{"boxes": torch.tensor([[5.0, 8, 40, 50]]), "labels": torch.tensor([1])}] * 2
    return Batch(images, targets, [(SIDE, SIDE)] * 2)


def _trainer(tmp_path, optimizer: str, settings=(), device: str = "cpu") -> Trainer:
    torch.manual_seed(0)
    model = create_model("ssd300_mobilenetv2", num_classes=3, input_size=SIDE).to(device)
    config = load_config(None, [f"train.optimizer={optimizer}", "train.max_nonfinite=2", *settings])
    opt = build_optimizer(model, config.train, 2)
    assert opt.defaults["fused"]  # what makes the skip a decision on the device
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    trainer = Trainer(config, model, StepModule(model), None, None, opt, scheduler, torch.device(device), tmp_path,
                      ["a", "b", "c"], ema=build_ema(model, 0.9, 4))
    trainer.set_train_mode()
    return trainer


def _poison(trainer: Trainer, steps: set[int]) -> None:
    """The loss is NaN on the given calls (1-based) of the model's compute_loss."""
    real, calls = trainer.model.compute_loss, [0]

    def compute_loss(images, targets):
        calls[0] += 1
        losses = real(images, targets)
        if calls[0] in steps:
            losses["loss_cls"] = losses["loss_cls"] * float("nan")
        return losses

    trainer.model.compute_loss = compute_loss


def _optimizer_tensors(optimizer) -> list[torch.Tensor]:
    return [t.clone() for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_nonfinite_first_step_changes_nothing_and_the_next_is_a_first_step(optimizer, device, tmp_path, capsys):
    """On the CPU and on CUDA (the fused kernels differ): also the optimiser's step counts (AdamW) stay 0."""
    trainer, fresh = _trainer(tmp_path / "a", optimizer, device=device), _trainer(tmp_path / "b", optimizer,
                                                                                   device=device)
    _poison(trainer, {1})
    batch = _batch()
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items() if v.is_floating_point()}
    average = {k: v.clone() for k, v in trainer.ema.module.state_dict().items()}
    trainer.train_step(batch)
    for key, value in weights.items():
        if "running_" not in key:  # BatchNorm statistics move in any forward pass, as before
            assert torch.equal(trainer.model.state_dict()[key], value), key
    for key, value in average.items():
        assert torch.equal(trainer.ema.module.state_dict()[key], value), key
    assert all(not t.any() for t in _optimizer_tensors(trainer.optimizer))  # zero buffers / steps, nothing else
    assert trainer.collect() is None and trainer.nonfinite_in_row == 1
    assert "warning: non-finite loss at step 1 (" in capsys.readouterr().out

    trainer.model.load_state_dict(fresh.model.state_dict())  # the skipped step's BatchNorm statistics aside
    trainer.train_step(batch)
    fresh.train_step(batch)
    assert trainer.collect() is not None and fresh.collect() is not None and trainer.nonfinite_in_row == 0
    # the same arithmetic on the same numbers: equal on the CPU; cuDNN's backward may sum in another order
    # from run to run (float32 gradients a few ulps apart, weights moved by lr x those: 1e-6 covers it)
    exact = {"rtol": 0.0, "atol": 0.0} if device == "cpu" else {"rtol": 1e-5, "atol": 1e-6}
    for key, value in fresh.model.state_dict().items():
        torch.testing.assert_close(trainer.model.state_dict()[key], value, **exact, msg=key)
    for ours, theirs in zip(_optimizer_tensors(trainer.optimizer), _optimizer_tensors(fresh.optimizer)):
        torch.testing.assert_close(ours, theirs, **exact)


def test_nonfinite_steps_in_a_row_raise_when_collected_with_the_step_that_reached_the_limit(tmp_path, capsys):
    trainer = _trainer(tmp_path, "sgd", ["train.log_every_steps=5"])
    _poison(trainer, {2, 3, 4})
    batch = _batch()
    trainer.train_step(batch)
    trainer.step += 1
    trainer.train_step(batch)
    trainer.step += 1
    trainer.train_step(batch)
    with pytest.raises(TrainingError, match=r"non-finite for 2 steps in a row .* training stopped at step 3"):
        trainer.collect()
    assert "warning: non-finite loss at step 2" in capsys.readouterr().out


def test_a_nonfinite_gradient_with_a_finite_loss_is_skipped_too(tmp_path, capsys):
    trainer = _trainer(tmp_path, "sgd")
    weights = [p.detach().clone() for p in trainer.model.parameters()]
    parameter = next(trainer.model.head.parameters())
    parameter.register_hook(lambda grad: grad * float("inf"))
    trainer.train_step(_batch())
    assert all(torch.equal(p, w) for p, w in zip(trainer.model.parameters(), weights))
    trainer.collect()
    assert "warning: non-finite gradient at step 1 (loss_box=" in capsys.readouterr().out


def test_other_optimisers_decide_on_the_host():
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    parameter.grad = torch.ones(3)
    step_unless(optimizer, torch.tensor(True))
    assert torch.equal(parameter.detach(), torch.ones(3))
    step_unless(optimizer, torch.tensor(False))
    assert torch.equal(parameter.detach(), torch.zeros(3))
