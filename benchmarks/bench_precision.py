"""What bf16 inference costs in accuracy: COCO mAP of trained checkpoints evaluated in fp32 and in bf16 (NHWC +
bfloat16 autocast, ``detzoo eval --precision bf16``), side by side, with the difference in mAP points against
issue 13's goal (at most 0.3 point lost). Accuracy does not depend on the machine's load; the bf16 column needs a
CPU or GPU with bfloat16.

    python benchmarks/bench_precision.py --pair CHECKPOINT DATASET [--pair CHECKPOINT DATASET ...]

e.g. the demo's checkpoint (``detzoo demo``) on its validation split and a short coco128 run on coco128, trained
with (a few CPU minutes on a quiet 2-core CPU)

    detzoo train ssd300_mobilenetv2 data.train=../shared/data/coco128 data.val=../shared/data/coco128 \\
        model.input_size=128 train.epochs=24 train.batch_size=8 train.lr=0.02 train.reference_batch=8 \\
        train.warmup_steps=50 train.warmup_factor=0.1 train.weight_decay=0.00004 train.lr_end=0.001 \\
        train.eval_every=24 train.eval_start=24 train.precise_bn=16 train.channels_last=true \\
        train.checkpoint_every=0 data.workers=1 data.augment.zoom_out=0 data.augment.iou_crop=false \\
        data.augment.photometric=0 train.output=runs train.name=coco128-ft

    python benchmarks/bench_precision.py --pair runs/demo/run/best.pt runs/demo/data/annotations/instances_val.json \\
        --pair runs/coco128-ft/best.pt ../shared/data/coco128
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import machine, print_table

from detzoo.common.config import DatasetSpec
from detzoo.data.formats import read_dataset
from detzoo.evaluation import evaluate_detections
from detzoo.predict import Predictor

GOAL_POINTS = 0.3


def evaluate(checkpoint: str, dataset: str, precision: str) -> tuple[dict[str, float], int]:
    predictor = Predictor.from_file(checkpoint, device=ARGS.device, precision=precision, batch_size=8)
    data = read_dataset(DatasetSpec(dataset), predictor.class_names)
    options, _ = predictor.backend.evaluation_options()  # the evaluation threshold, as detzoo eval
    return evaluate_detections(list(predictor.predict_data(data, options)), data, "coco").metrics, len(data)


def main() -> None:
    print(f"machine: {machine()}; device {ARGS.device}")
    rows = []
    for checkpoint, dataset in ARGS.pair:
        (fp32, images), (bf16, _) = (evaluate(checkpoint, dataset, p) for p in ("fp32", "bf16"))
        loss = 100 * (fp32["mAP"] - bf16["mAP"])
        rows.append([Path(checkpoint).parent.name + "/" + Path(checkpoint).name, Path(dataset).name, images,
                     f"{100 * fp32['mAP']:.2f}", f"{100 * bf16['mAP']:.2f}", f"{loss:+.2f}",
                     f"{100 * fp32['mAP50']:.2f}", f"{100 * bf16['mAP50']:.2f}",
                     "met" if loss <= GOAL_POINTS else "missed"])
    print_table(f"COCO mAP in points, fp32 vs bf16 (goal: bf16 loses at most {GOAL_POINTS} point)",
                ["checkpoint", "data", "images", "mAP fp32", "mAP bf16", "fp32 - bf16", "AP50 fp32",
                 "AP50 bf16", "goal"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", nargs=2, action="append", required=True, metavar=("CHECKPOINT", "DATASET"))
    parser.add_argument("--device", default="cpu")
    ARGS = parser.parse_args()
    main()
