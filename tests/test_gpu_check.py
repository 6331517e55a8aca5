"""The one GPU check (benchmarks/gpu_check.py) without a GPU: its plan, and the rows it makes of what runs, fails,
is missing or has to wait (issue 16, item 6). ``--device cpu`` runs the CPU part for real (minutes: not here)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from fast_training import ROOT, subprocess_env


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up while they are made
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["gpu_check"]


def test_the_dry_run_lists_every_check_in_one_table():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run"],
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    table = done.stdout
    for check in ("train fp32", "train bf16", "train fp16 + scaler", "train data.decode=cuda",
                  "train train.compile=true", "torchrun", "NCCL", "eval bf16", "predict", "serve",
                  "export ONNX of the CUDA-trained checkpoint", "tests marked cuda", "demo",
                  "speed: bench_train.py", "inference eager vs compiled"):
        assert check in table, check
    assert table.count("dry run") == 14


def test_rows_say_what_is_missing_failed_or_timed_out(gpu_check):
    check = gpu_check.Check("export", ["x"], figure=r"largest difference ([^;\n]*)")
    missing = gpu_check.outcome(check, 1, "Traceback ...\nModuleNotFoundError: No module named 'onnxruntime.capi'",
                                3.0, "export.log")
    assert missing.status == "missing onnxruntime"
    failed = gpu_check.outcome(check, 2, "loading\nerror: runs/x/last.pt: weights file not found\n", 1.0, "e.log")
    assert failed.status == "FAIL" and failed.note == "error: runs/x/last.pt: weights file not found"
    timed_out = gpu_check.outcome(check, None, "", 60.0, "e.log")
    assert timed_out.status == "FAIL" and "timed out" in timed_out.note
    ok = gpu_check.outcome(check, 0, "ONNX Runtime vs PyTorch on 8 image(s): largest difference 7.6e-06 px (boxes), "
                                     "9.5e-08 (scores); at most ...", 2.0, "e.log")
    assert ok.status == "ok" and ok.figure == "7.6e-06 px (boxes), 9.5e-08 (scores)"


def test_goals_are_judged_from_the_printed_figures(gpu_check):
    demo = gpu_check.Check("demo", ["x"], parse=gpu_check.demo_figure, cuda_goal=True)
    printed = "demo finished in 1.1 min: val mAP@0.5 0.512, mAP@[.5:.95] 0.331\n"
    assert gpu_check.outcome(demo, 0, printed, 70.0, "d.log").met == "yes"
    slow = printed.replace("1.1 min", "3.0 min")
    assert gpu_check.outcome(demo, 0, slow, 180.0, "d.log").met == "NO"
    assert gpu_check.outcome(demo, 0, printed, 70.0, "d.log", cuda=False).met == ""  # a GPU's goal
    epoch = "epoch 1/1  loss_box 0.51 loss_cls 0.40 loss 0.9100  lr 0.05  812.3 img/s  3s\n"
    assert gpu_check.epoch_figure(epoch) == ("loss 0.9100, 812.3 img/s", True)
    assert gpu_check.epoch_figure(epoch.replace("0.9100", "nan"))[1] is False
    speed = "ssd300_mobilenetv2  128    300x300  15       2612       1544       0.59        9.1  \n"
    assert gpu_check.speed_figure(speed)[1] is True
    infer = "compiled (CUDA graphs)         1.32        758            6210         \n"
    assert gpu_check.infer_figure(infer) == ("compiled: batch 1 1.32 ms, large batch 6210 img/s", True)


def test_checks_wait_for_what_they_need(gpu_check, tmp_path, monkeypatch):
    context = gpu_check.Context(tmp_path, "cuda")
    needs_module = gpu_check.Check("serve", needs=("no_such_module_here",))
    assert gpu_check.run_check(needs_module, context).status == "missing no_such_module_here"
    context.results["train fp32"] = gpu_check.Result("train fp32", "FAIL")
    after = gpu_check.Check("eval", ["x"], after="train fp32")
    assert gpu_check.run_check(after, context).status == "not run"
    assert gpu_check.run_check(gpu_check.Check("fp16", ["x"], cuda_only=True),
                               gpu_check.Context(tmp_path, "cpu")).status == "skipped"
    monkeypatch.setitem(gpu_check.BUDGET_S, "cuda", 0.0)
    assert gpu_check.run_check(gpu_check.Check("late", ["x"]), context).status == "not run (time)"
