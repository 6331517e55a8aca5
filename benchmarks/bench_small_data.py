"""The small-data recipe (``configs/small_data.yaml``) measured: ssd300_mobilenetv2 trained from scratch on a
small set, with the mAP of every evaluation and the minutes it took, read from the run's ``metrics.csv``.

    python benchmarks/bench_small_data.py --train ../shared/data/microcontroller/train \\
        --val ../shared/data/microcontroller/test --out runs --name small-data
    python benchmarks/bench_small_data.py --run runs/small-data      # the table of a finished run again

Minutes are training time (the sum of the epochs' times) as the run went, and the whole command's wall time
(with evaluations, checkpoints and start-up) at the end; both depend on the machine and its load, mAP does not.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

from common import machine, print_table


def train(args: argparse.Namespace) -> tuple[Path, float]:
    """Run the recipe (``python -m detzoo train small_data ...``) -> (run folder, wall seconds)."""
    command = [sys.executable, "-m", "detzoo", "train", "small_data", f"data.train={args.train}",
               f"data.val={args.val}", f"train.output={args.out}", f"train.name={args.name}", *args.override]
    print("command:", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return Path(args.out) / args.name, time.perf_counter() - start


def table(run: Path) -> list[list[object]]:
    """One row per evaluation: epoch, training minutes so far, mAP@0.5, mAP@[.5:.95]."""
    rows, minutes = [], 0.0
    with open(run / "metrics.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            minutes += float(row["epoch_time_s"]) / 60
            if row.get("val_mAP50"):
                rows.append([row["epoch"], f"{minutes:.1f}", f"{float(row['val_mAP50']):.3f}",
                             f"{float(row['val_mAP']):.3f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", help="training set (any format detzoo reads)")
    parser.add_argument("--val", help="validation set")
    parser.add_argument("--out", default="runs")
    parser.add_argument("--name", default="small-data")
    parser.add_argument("--run", help="print the table of this finished run instead of training")
    parser.add_argument("override", nargs="*", help="extra key=value settings for the recipe")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    wall = None
    if args.run:
        run = Path(args.run)
    else:
        if not (args.train and args.val):
            parser.error("--train and --val are needed to train (or --run RUN)")
        run, wall = train(args)
    print_table(f"small_data recipe: {run} (every evaluation; metrics.csv)",
                ["epoch", "training min", "mAP@0.5", "mAP@[.5:.95]"], table(run))
    if wall is not None:
        print(f"\nwall time of the whole command: {wall / 60:.1f} min")


if __name__ == "__main__":
    main()
