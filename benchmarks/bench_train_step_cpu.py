"""One SSD training step on the CPU (``Trainer.train_step``: normalise, forward, loss, backward, optimiser
step, the step's bookkeeping) in this checkout and in a baseline checkout, side by side in one run, as a
ratio: issue 16's "CPU SSD training step at 300 px, batch 8: not slower" for the batched loss and the
step without waits.

The two trees run alternately in child processes (``--rounds`` of each, so a change of the machine's load
hits both), each on the same synthetic batch (4 objects per image, a fifth of them crowd), with the recipe's
optimiser and the demo's NHWC layout. Reported per tree: the median CPU time of a step in the children
(``time.process_time``; with one thread other processes on the cores barely move it), the median wall time,
and the number of ATen operators one step dispatches at batch 8 and at batch 32 (``TorchDispatchMode``, in
the first round: a count that grows with the batch is work per image).

    mkdir -p /tmp/detzoo-base && git archive c26eec0 src | tar -x -C /tmp/detzoo-base
    python benchmarks/bench_train_step_cpu.py --baseline /tmp/detzoo-base [--threads 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL, SIDE, BATCH = "ssd300_mobilenetv2", 300, 8


def measure(steps: int, threads: int, count: bool) -> dict:
    """In a child: time ``steps`` training steps of the checkout on ``sys.path`` (after two warm-up steps)."""
    import tempfile

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from detzoo.common.config import load_config
    from detzoo.common.memory import retain_freed_memory
    from detzoo.data.loader import Batch
    from detzoo.engine.optim import build_optimizer
    from detzoo.engine.trainer import StepModule, Trainer
    from detzoo.models import create_model

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count[str(func)] += 1
            return func(*args, **(kwargs or {}))

    torch.set_num_threads(threads)
    retain_freed_memory()  # as training does
    torch.set_flush_denormal(True)  # as training does

    def trainer_and_batch(batch_size: int):
        torch.manual_seed(0)
        model = create_model(MODEL, num_classes=80)
        config = load_config(MODEL, [f"train.batch_size={batch_size}", "train.channels_last=true"])
        model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(model, config.train, batch_size)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        trainer = Trainer(config, model, StepModule(model), None, None, optimizer, scheduler, torch.device("cpu"),
                          Path(tempfile.mkdtemp()), [str(i) for i in range(80)])
        trainer.set_train_mode()
        g = torch.Generator().manual_seed(batch_size)
        targets = []
        for _ in range(batch_size):
            xy = torch.rand(4, 2, generator=g) * SIDE * 0.6
            wh = torch.rand(4, 2, generator=g) * SIDE * 0.35 + 8
            targets.append({"boxes": torch.cat([xy, xy + wh], dim=1), "labels": torch.randint(0, 80, (4,), generator=g),
                            "iscrowd": torch.rand(4, generator=g) < 0.2})
        images = torch.randint(0, 256, (batch_size, 3, SIDE, SIDE), dtype=torch.uint8, generator=g)
        return trainer, Batch(images, targets, [(SIDE, SIDE)] * batch_size)

    def step(trainer, batch, index):
        trainer.train_step(batch)
        if hasattr(trainer, "collect") and (index + 1) % trainer.cfg.log_every_steps == 0:
            trainer.collect()  # this checkout: the records are collected every train.log_every_steps

    trainer, batch = trainer_and_batch(BATCH)
    for index in range(2):
        step(trainer, batch, index)
    cpu, wall = [], []
    for index in range(steps):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        step(trainer, batch, index)
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    operators = {}
    for size in (BATCH, 32) if count else ():
        counting, sized = trainer_and_batch(size)
        step(counting, sized, 0)  # the first step makes the optimiser's state
        with Count() as counter:
            step(counting, sized, 1)
        operators[size] = sum(counter.count.values())
    return {"cpu": statistics.median(cpu), "wall": statistics.median(wall), "operators": operators}


def child(src: Path, steps: int, threads: int, count: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, __file__, "--child", str(steps), str(threads), str(int(count))], env=env,
                         cwd=HERE,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout to compare with (its root)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="children per tree, alternating")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per child")
    args = parser.parse_args()
    from common import machine, print_table

    trees = {"this checkout": HERE.parent / "src", f"baseline ({args.baseline.name})": args.baseline / "src"}
    results = {name: [] for name in trees}
    for round_ in range(args.rounds):
        for name, src in trees.items():
            results[name].append(child(src, args.steps, args.threads, count=round_ == 0))
    import torch

    torch.set_num_threads(args.threads)  # the children's setting, for the machine line
    print(machine())
    cpu = {name: statistics.median(r["cpu"] for r in runs) for name, runs in results.items()}
    baseline = cpu[list(trees)[1]]
    rows = [[name, f"{cpu[name] * 1000:.1f}", "-".join(f"{f(r['cpu'] for r in runs) * 1000:.0f}" for f in (min, max)),
             f"{statistics.median(r['wall'] for r in runs) * 1000:.0f}",
             runs[0]["operators"][str(BATCH)], runs[0]["operators"]["32"], f"{cpu[name] / baseline:.3f}"]
            for name, runs in results.items()]  # operators: counted in the first round
    print_table(f"{MODEL} training step, {SIDE} px, batch {BATCH}, CPU, {args.threads} thread(s), median of "
                f"{args.rounds} x {args.steps} steps", ["tree", "CPU ms/step", "rounds' range", "wall ms/step",
                                                        f"operators b{BATCH}", "operators b32", "CPU time vs baseline"],
                rows)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(measure(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1")))
    else:
        main()
