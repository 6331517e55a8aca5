"""The embedded default runs end to end (quick mode: a tiny dataset and a few steps)."""

import json

from detzoo.cli import main
from detzoo.data.synthetic import make_shapes_dataset


def test_synthetic_dataset_is_deterministic(tmp_path):
    a_train, _ = make_shapes_dataset(tmp_path / "a", train=6, val=2, size=96, seed=3)
    b_train, _ = make_shapes_dataset(tmp_path / "b", train=6, val=2, size=96, seed=3)
    assert json.loads(a_train.read_text())["annotations"] == json.loads(b_train.read_text())["annotations"]
    assert (tmp_path / "a/train/train_00003.jpg").read_bytes() == (tmp_path / "b/train/train_00003.jpg").read_bytes()
    data = json.loads(a_train.read_text())
    assert {c["name"] for c in data["categories"]} == {"circle", "square", "triangle", "star"}
    assert all(1 <= sum(a["image_id"] == i["id"] for a in data["annotations"]) <= 4 for i in data["images"])


def test_quick_demo_trains_evaluates_and_draws(tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "run").mkdir(parents=True)  # a previous demo's run (it has the marker) is replaced
    (out / "run" / ".detzoo-demo").write_text("")
    (out / "run" / "stale.txt").write_text("from the previous demo")
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "demo finished" in printed and "val mAP@0.5" in printed
    run = out / "run"
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file() and (run / "metrics.csv").is_file()
    assert (run / ".detzoo-demo").is_file() and not (run / "stale.txt").exists()
    assert "val_mAP50" in (run / "metrics.csv").read_text().splitlines()[0]
    drawn = sorted((out / "predictions").glob("*.jpg"))
    assert len(drawn) == 8 and len(list((out / "predictions").glob("*.json"))) == 8


def test_the_demo_recipe_is_the_cpu_one_on_a_cpu_and_sized_for_a_gpu_on_cuda(tmp_path):
    """On the CPU the demo trains on configs/demo.yaml exactly (batch 8, one worker, 3 epochs); on a GPU with
    batch 64, every CPU for workers and 6 epochs, the learning rate scaled with the batch from the recipe's
    reference batch of 8, the same 100 warm-up steps. ``--quick`` and the user's overrides come after."""
    import dataclasses

    import torch

    from detzoo.common.config import load_config
    from detzoo.demo import demo_config
    from detzoo.engine.optim import scaled_lr

    paths = (tmp_path, tmp_path / "train.json", tmp_path / "val.json")
    cpu = demo_config(*paths, device=torch.device("cpu"))
    before = load_config("demo", [f"data.train={paths[1]}", f"data.val={paths[2]}", f"train.output={tmp_path}",
                                  "train.name=run"])  # what the demo trained on before it knew GPUs
    assert cpu == before
    assert (cpu.train.batch_size, cpu.data.workers, cpu.train.epochs) == (8, 1, 3)
    cuda = demo_config(*paths, device=torch.device("cuda"))
    changed = {f"{part}.{key}" for part in ("train", "data", "model", "eval")
               for key, value in dataclasses.asdict(getattr(cuda, part)).items()
               if value != dataclasses.asdict(getattr(cpu, part))[key]}
    assert changed == {"train.batch_size", "train.epochs", "data.workers"}
    assert (cuda.train.batch_size, cuda.data.workers, cuda.train.epochs) == (64, None, 6)
    assert scaled_lr(cuda.train, 64) == 8 * scaled_lr(cpu.train, 8) and cuda.train.warmup_steps == 100
    quick = demo_config(*paths, quick=True, overrides=["train.batch_size=4"], device=torch.device("cuda"))
    assert (quick.train.batch_size, quick.train.epochs) == (4, 1)
    assert demo_config(*paths, quick=True, device=torch.device("cuda")).train.batch_size == 8
