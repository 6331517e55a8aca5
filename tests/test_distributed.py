"""DDP through torchrun on the CPU (gloo): two processes end where one process with the same global batch
ends; a stop signal reaching one process stops both after the same step; the global batch and the sharded
evaluation cover every image exactly once.

Why ``train.freeze_bn=true`` in the comparison: with BatchNorm in training mode each process normalises
with the statistics of its own half batch, which is a different computation from one process normalising
the whole batch (SyncBatchNorm would make them agree, but torch implements it for CUDA only). With the
running statistics in use, the per-image computation is the same in both setups, so the only differences
left are float summation order - which the tolerance allows - and any real bug (gradient averaging, loss
normalisation, sampling, learning-rate scaling) shows up far above it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from detzoo.cli import main
from detzoo.common.config import DatasetSpec
from detzoo.common.distributed import DistInfo, global_normalizer
from detzoo.data.formats import read_dataset
from detzoo.data.loader import TrainBatchSampler
from detzoo.engine.evaluate import collect_detections, interleave, local_detections
from detzoo.engine.inference import TorchBackend
from detzoo.models import create_model
from fast_training import fast_args, load, max_difference, metrics_rows, start_cli, wait_for


def test_two_processes_together_see_the_batches_of_one_process_with_twice_the_batch(shapes):
    data = read_dataset(DatasetSpec(str(shapes[0])), None)
    one = TrainBatchSampler(data, batch_size=8, seed=3)
    ranks = [TrainBatchSampler(data, batch_size=4, seed=3, rank=r, world_size=2) for r in range(2)]
    for epoch in range(2):
        for sampler in (one, *ranks):
            sampler.set_epoch(epoch)
        single, first, second = list(one), list(ranks[0]), list(ranks[1])
        assert len(single) == len(first) == len(second) == 3
        for batch, part0, part1 in zip(single, first, second):
            assert sorted(batch) == sorted(part0 + part1)  # same images, same per-sample augmentation seeds


def test_sharded_evaluation_gathers_every_image_once_in_dataset_order(shapes):
    data = read_dataset(DatasetSpec(str(shapes[1])), None)
    torch.manual_seed(0)
    backend = TorchBackend(create_model("ssd300_mobilenetv2", num_classes=4, input_size=128, score_thresh=0.001))
    whole = collect_detections(backend, data, batch_size=3, workers=0)
    parts = [local_detections(backend, data, batch_size=3, workers=0, dist=DistInfo(rank, 3)) for rank in range(3)]
    assert [len(p) for p in parts] == [3, 3, 2]
    gathered = interleave(parts, len(data))
    assert [d.image_id for d in gathered] == [d.image_id for d in whole] == [r.image_id for r in data.records]
    assert sum(len(d) for d in whole) > 0
    for a, b in zip(gathered, whole):
        torch.testing.assert_close(a.boxes, b.boxes)
        torch.testing.assert_close(a.scores, b.scores)
    with pytest.raises(RuntimeError, match="process 1 returned 2 results for its 3 images"):
        interleave([parts[0], parts[1][:2], parts[2]], len(data))


def test_the_loss_normaliser_of_one_process_is_its_own_positive_count():
    assert global_normalizer(torch.tensor(7)).item() == 7.0
    assert global_normalizer(torch.tensor(0)).item() == 1.0  # images without objects are legal


def test_torchrun_two_processes_end_like_one_process_with_the_same_global_batch(tmp_path, shapes, capsys):
    settings = ["train.epochs=1", "train.freeze_bn=true"]
    process = start_cli(fast_args(shapes, tmp_path, "ddp", *settings, val=True), torchrun_processes=2)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    assert out.count("training ssd300_mobilenetv2 on 24 images") == 1  # rank 0 prints, the other does not
    assert "2 process(es) x batch 4, lr 0.05" in out  # lr scaled to the global batch of 8
    assert main(fast_args(shapes, tmp_path, "single", *settings, "train.batch_size=8", val=True)) == 0
    assert "1 process(es) x batch 8, lr 0.05" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single"]  # one run folder, from rank 0

    ddp, single = load(tmp_path / "ddp"), load(tmp_path / "single")
    assert ddp["step"] == single["step"] == 3
    torch.manual_seed(0)
    initial = create_model("ssd300_mobilenetv2", num_classes=4, input_size=128).state_dict()
    moved = max_difference(initial, single["model"])
    gap = max_difference(ddp["model"], single["model"])
    assert moved > 1e-2 and gap < 1e-5, (moved, gap)
    rows_ddp, rows_single = metrics_rows(tmp_path / "ddp"), metrics_rows(tmp_path / "single")
    for column in ("loss", "loss_box", "loss_cls", "lr"):  # losses averaged over both processes
        assert float(rows_ddp[0][column]) == pytest.approx(float(rows_single[0][column]), rel=1e-5), column
    # distributed evaluation (8 images over 2 processes) scored the same detections as one process
    for column in ("val_mAP", "val_mAP50", "val_AR100"):
        assert float(rows_ddp[0][column]) == pytest.approx(float(rows_single[0][column]), abs=1e-4), column


def _child_with_rank(parent: int, rank: int) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no child of {parent} with RANK={rank}")


def test_sigterm_to_one_process_stops_every_process_after_the_same_step(tmp_path, shapes):
    run = tmp_path / "ddp_stop"
    process = start_cli(fast_args(shapes, tmp_path, "ddp_stop", "train.epochs=4"), torchrun_processes=2)
    wait_for(lambda: (run / "metrics.csv").exists(), process, "the first epoch ended")
    os.kill(_child_with_rank(process.pid, 1), signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=120)
    except Exception:
        process.kill()
        raise AssertionError("the processes did not all stop (one kept training or hung)") from None
    assert process.returncode != 0
    assert err.count("training stopped by a signal to another process") == 1, err  # rank 0's message
    assert f"Resume with:\n  torchrun --nproc_per_node=2 -m detzoo train --resume {run}" in err
    state = load(run)
    assert 3 <= state["step"] < 12 and len(state["rng_per_rank"]) == 2
