"""Optimiser groups, schedules, checkpoints (weights_only, atomic) and exact resume."""

import math

import pytest
import torch
from torch import nn

from detzoo.common.checkpoints import atomic_save, load_checkpoint
from detzoo.common.config import TrainConfig, load_config
from detzoo.common.errors import CheckpointError
from detzoo.common.files import remove_stale_temp_files
from detzoo.engine.optim import WarmupSchedule, build_optimizer, parameter_groups, scaled_lr


def test_no_weight_decay_on_biases_and_norms():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    decay, no_decay = parameter_groups(model, 1e-4)
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias),
                                                   id(model[2].bias)}
    assert no_decay["weight_decay"] == 0.0


def test_lr_scales_with_global_batch():
    cfg = TrainConfig(lr=0.05, reference_batch=256)
    assert scaled_lr(cfg, 32) == pytest.approx(0.00625)
    optimizer = build_optimizer(nn.Linear(2, 2), cfg, 512)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_warmup_then_cosine():
    schedule = WarmupSchedule("cosine", total_steps=110, warmup_steps=10, warmup_factor=0.1, lr_end=0.01,
                              milestones=[], gamma=0.1)
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(5) == pytest.approx(0.55)
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert schedule(110) == pytest.approx(0.01)
    steps = WarmupSchedule("step", 120, 0, 1.0, 0.0, [8 / 12, 11 / 12], 0.1)
    assert [steps(s) for s in (0, 79, 80, 110)] == pytest.approx([1, 1, 0.1, 0.01])


class Arbitrary:
    """Any pickled object: a checkpoint holding one must not load."""


def test_checkpoint_loads_weights_only_and_rejects_foreign_files(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"model": {"w": torch.ones(2)}, "config": load_config(None).to_dict(), "class_names": ["a"]},
                path)
    assert load_checkpoint(path)["class_names"] == ["a"]
    assert not list(tmp_path.glob(".*tmp*"))
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a detzoo checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "broken.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "broken.pt")
    torch.save({"model": Arbitrary(), "config": {}}, tmp_path / "pickled.pt")  # weights_only refuses it
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "pickled.pt")


def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"model": {"w": torch.zeros(1)}, "config": {}}, path)

    def exploding_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"model": {"w": torch.ones(1)}, "config": {}}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["model"]["w"].item() == 0.0
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_temp_files_of_killed_writes_are_removed(tmp_path):
    atomic_save({"model": {}, "config": {}}, tmp_path / "last.pt")
    (tmp_path / ".last.pt.tmp-4242").write_bytes(b"half a checkpoint")  # a writer killed mid-way
    (tmp_path / "notes.tmp-1").write_text("not ours")
    assert [p.name for p in remove_stale_temp_files(tmp_path)] == [".last.pt.tmp-4242"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "notes.tmp-1"]
