"""The same weights evaluated at several score thresholds: the evaluation threshold (``detzoo eval``'s default,
``models/selection.py``), 0.001, and the model's own threshold (what every mAP used before issue 20). Issue 20's
goal: the evaluation threshold within 0.005 mAP of 0.001. Accuracy does not depend on the machine's load.

    python benchmarks/bench_eval_threshold.py --pair CHECKPOINT DATASET [--pair CHECKPOINT DATASET ...]

e.g. the demo's checkpoint (``detzoo demo``), a short coco128 fine-tune (the command in bench_precision.py) and the
small-data recipe's run (bench_small_data.py):

    python benchmarks/bench_eval_threshold.py --pair runs/demo/run/best.pt runs/demo/data/annotations/instances_val.json \\
        --pair runs/coco128-ft/best.pt ../shared/data/coco128 \\
        --pair runs/small-data/best.pt ../shared/data/microcontroller/test
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import machine, print_table

from detzoo.common.config import DatasetSpec
from detzoo.data.formats import read_dataset
from detzoo.evaluation import evaluate_detections
from detzoo.models.selection import EVAL_MAX_DETECTIONS, SelectOptions
from detzoo.predict import Predictor

GOAL = 0.005  # mAP@[.5:.95], evaluation threshold vs 0.001
REFERENCE = 0.001


def evaluate(predictor: Predictor, data, options: SelectOptions) -> dict[str, float]:
    return evaluate_detections(list(predictor.predict_data(data, options)), data, "coco").metrics


def main() -> None:
    print(f"machine: {machine()}")
    rows = []
    for checkpoint, dataset in ARGS.pair:
        predictor = Predictor.from_file(checkpoint, device="cpu", batch_size=8)
        data = read_dataset(DatasetSpec(dataset), predictor.class_names)
        chosen, _ = predictor.backend.evaluation_options()
        own = predictor.backend.score_threshold
        figures = {threshold: evaluate(predictor, data, SelectOptions(score_threshold=threshold,
                                                                      max_detections=EVAL_MAX_DETECTIONS))
                   for threshold in dict.fromkeys([chosen.score_threshold, REFERENCE, own])}
        at_eval, at_ref, at_own = (figures[t] for t in (chosen.score_threshold, REFERENCE, own))
        gap = at_eval["mAP"] - at_ref["mAP"]
        rows.append([str(Path(checkpoint).parent.name) + "/" + Path(checkpoint).name, Path(dataset).name, len(data),
                     f"{chosen.score_threshold:g}", f"{at_eval['mAP']:.4f} / {at_eval['mAP50']:.4f}",
                     f"{at_ref['mAP']:.4f} / {at_ref['mAP50']:.4f}", f"{gap:+.4f}",
                     "met" if abs(gap) <= GOAL else "missed",
                     f"{own:g}", f"{at_own['mAP']:.4f} / {at_own['mAP50']:.4f}"])
    print_table(f"COCO mAP / mAP@0.5 of the same weights at three score thresholds, <= {EVAL_MAX_DETECTIONS} "
                f"detections per image (goal: evaluation threshold within {GOAL} mAP of {REFERENCE})",
                ["checkpoint", "data", "images", "eval thr", "mAP / AP50 at eval thr", f"at {REFERENCE}",
                 f"eval - {REFERENCE}", "goal", "model thr", "at model thr (before)"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", nargs=2, action="append", required=True, metavar=("CHECKPOINT", "DATASET"))
    ARGS = parser.parse_args()
    main()
