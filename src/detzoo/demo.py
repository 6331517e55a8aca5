"""``detzoo demo``: generate the synthetic shapes dataset, train ssd300_mobilenetv2 on it on the CPU,
evaluate on the val split, draw predictions, and say where everything is."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .common.config import load_config
from .data.synthetic import make_shapes_dataset

# Thousands of fresh images seen 3 times: hundreds seen 30 times were memorised (see configs/demo.yaml).
TRAIN_IMAGES, VAL_IMAGES, IMAGE_SIZE = 8000, 200, 128


def run_demo(out: Path, quick: bool = False, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    from .engine.train import train
    from .predict import Predictor

    start = time.time()
    out = Path(out)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train_count, val_count = (32, 16) if quick else (TRAIN_IMAGES, VAL_IMAGES)
    train_json, val_json = make_shapes_dataset(out / "data", train=train_count, val=val_count, size=IMAGE_SIZE)
    print(f"dataset: {train_count} train + {val_count} val images of 4 shape classes in {out / 'data'} "
          f"({time.time() - start:.0f}s)")
    settings = [f"data.train={train_json}", f"data.val={val_json}", f"train.output={out}", "train.name=run"]
    if quick:
        settings += ["train.epochs=1", "train.eval_every=1", "train.eval_start=1", "train.precise_bn=2"]
    config = load_config("demo", [*settings, *overrides])
    run_root = out / "run"
    if run_root.exists():
        import shutil

        shutil.rmtree(run_root)  # the demo's own previous run; nothing else is touched
    run_dir = train(config)
    best = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt"
    predictor = Predictor.from_checkpoint(best, device="cpu")
    from .predict import list_images
    from .visualize import save_prediction

    predictions = out / "predictions"
    for det in predictor.predict_paths(list_images(val_json.parent.parent / "val")[:8]):
        save_prediction(det.filter(0.3), predictions)
    from .common.checkpoints import load_checkpoint

    state = load_checkpoint(best)
    elapsed = time.time() - start
    metrics_csv = (run_dir / "metrics.csv").read_text().splitlines()
    header, last = metrics_csv[0].split(","), metrics_csv[-1].split(",")
    row = dict(zip(header, last))
    summary = {"mAP": float(row.get("val_mAP", "nan") or "nan"), "mAP50": float(row.get("val_mAP50", "nan") or "nan"),
               "seconds": elapsed, "run_dir": str(run_dir), "best_score": state["best_score"]}
    print(f"\ndemo finished in {elapsed / 60:.1f} min: val mAP@0.5 {summary['mAP50']:.3f}, "
          f"mAP@[.5:.95] {summary['mAP']:.3f}")
    print(f"  run folder:   {run_dir} (config.yaml, metrics.csv, last.pt, best.pt)")
    print(f"  predictions:  {predictions} (drawn images + JSON for 8 val images)")
    print(f"  try:          detzoo predict {best} YOUR_IMAGES/ --out predictions")
    print(f"  serve it:     detzoo serve {best}  (web page and HTTP API on http://127.0.0.1:8000/)")
    return summary
