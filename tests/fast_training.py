"""Shared by the training tests: a fast recipe on the generated shapes data (128 px, 24 train images),
running the CLI in this process or in subprocesses (plain python or torchrun) with this checkout first on
the path."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TRAIN_IMAGES = 8  # the trained_ssd fixture overfits the first 8 coco128 images, so its mAP and scores on them are far from zero


def fast_args(shapes: tuple[Path, Path], out: Path, name: str, *extra: str, val: bool = False) -> list[str]:
    """``detzoo train`` arguments: ssd300_mobilenetv2 at 128 px, 4 images per process, a constant and
    large enough learning rate that a few steps move the weights."""
    train_json, val_json = shapes
    args = ["train", "ssd300_mobilenetv2", "model.input_size=128", "train.batch_size=4", "data.workers=0",
            "train.lr=0.05", "train.reference_batch=8", "train.schedule=constant", "train.warmup_epochs=0",
            "train.eval_every=0", "eval.batch_size=8", f"data.train={train_json}", f"train.output={out}",
            f"train.name={name}"]
    args += [f"data.val={val_json}", "train.eval_every=1"] if val else ["data.val=[]"]
    return [*args, *extra]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # the same arithmetic as this process
    return env


def start_cli(args: list[str], torchrun_processes: int = 0) -> subprocess.Popen:
    """``python -m detzoo ARGS`` (or under ``torchrun --standalone --nproc_per_node=N``) in the background,
    as the leader of a new process group (``os.killpg(process.pid, ...)`` signals it and its children)."""
    launcher = [sys.executable, "-m", "detzoo"]
    if torchrun_processes:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={torchrun_processes}", "-m", "detzoo"]
    return subprocess.Popen([*launcher, *args], env=subprocess_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 300.0) -> None:
    """Poll ``condition()`` until true; fail with the process's output if it ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the process ended (code {process.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            out, err = process.communicate()
            raise AssertionError(f"timed out waiting for {what}:\n{out}\n{err}")
        time.sleep(0.02)


def load(run: Path, name: str = "last.pt") -> dict:
    return torch.load(run / name, map_location="cpu", weights_only=True)


def assert_same_weights(a: dict, b: dict, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=rtol, atol=atol, msg=lambda m, k=key: f"{k}: {m}")


def max_difference(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def metrics_rows(run: Path) -> list[dict[str, str]]:
    import csv

    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))
