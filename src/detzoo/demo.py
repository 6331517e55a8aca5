"""``detzoo demo``: generate the synthetic shapes dataset, train ssd300_mobilenetv2 on it (on the CPU, or on
the GPU when there is one), evaluate on the val split, draw predictions, and say where everything is."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from .common.config import Config, load_config
from .common.device import resolve_device
from .common.errors import ConfigError
from .data.synthetic import make_shapes_dataset

# Thousands of fresh images seen 3 times: hundreds seen 30 times were memorised (see configs/demo.yaml).
TRAIN_IMAGES, VAL_IMAGES, IMAGE_SIZE = 8000, 200, 128
DEMO_MARKER = ".detzoo-demo"  # written into OUT/run: only a folder holding it is replaced by the next demo
# configs/demo.yaml is the 2-core CPU's recipe (batch 8, one worker). A GPU at batch 8 waits on every step (issue 16:
# 136 img/s on an H200, 3 minutes): batch 64 and every CPU for data workers. The learning rate follows the batch
# linearly (the recipe's 0.02 is for reference_batch 8: 0.16), with the recipe's 100 warm-up steps now spanning
# 8x the images; twice the epochs give back half of the steps that 8x fewer, larger ones cost (750 instead of 3000:
# a 3-epoch schedule is far from converged, so steps count), still seeing each of the 8000 images only 6 times.
CUDA_SETTINGS = ("train.batch_size=64", "train.epochs=6", "data.workers=null")


def demo_config(out: Path, train_json: Path, val_json: Path, quick: bool = False,
                overrides: list[str] | tuple[str, ...] = (), device: torch.device | None = None) -> Config:
    """configs/demo.yaml on this data, plus ``CUDA_SETTINGS`` when it trains on a GPU (``device``; by default
    the one ``train.device`` resolves to), then ``--quick``'s, then the user's overrides (which win)."""
    settings = [f"data.train={train_json}", f"data.val={val_json}", f"train.output={out}", "train.name=run"]
    quick_settings = ["train.epochs=1", "train.batch_size=8", "train.eval_every=1", "train.eval_start=1",
                      "train.precise_bn=2"] if quick else []  # (32 images: batch 8 also on a GPU)
    if device is None:
        device = resolve_device(load_config("demo", [*settings, *overrides]).train.device)
    device_settings = list(CUDA_SETTINGS) if device.type == "cuda" else []
    return load_config("demo", [*settings, *device_settings, *quick_settings, *overrides])


def run_demo(out: Path, quick: bool = False, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    from .engine.train import train
    from .predict import Predictor

    start = time.time()
    out = Path(out)
    run_root = out / "run"
    if run_root.exists() and not (run_root / DEMO_MARKER).is_file():
        raise ConfigError(f"{run_root} exists and was not made by detzoo demo (no {DEMO_MARKER} in it); "
                          "the demo replaces its own run only: give another --out, or move that folder away")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train_count, val_count = (32, 16) if quick else (TRAIN_IMAGES, VAL_IMAGES)
    train_json, val_json = make_shapes_dataset(out / "data", train=train_count, val=val_count, size=IMAGE_SIZE)
    print(f"dataset: {train_count} train + {val_count} val images of 4 shape classes in {out / 'data'} "
          f"({time.time() - start:.0f}s)")
    config = demo_config(out, train_json, val_json, quick, overrides)
    if run_root.exists():
        shutil.rmtree(run_root)  # the demo's own previous run (checked above); nothing else is touched
    try:
        run_dir = train(config)
    finally:
        if run_root.is_dir():  # made by this train(), even when it was interrupted
            (run_root / DEMO_MARKER).write_text("made by `detzoo demo`; the next demo with this --out replaces "
                                                "this folder\n")
    best = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt"
    predictor = Predictor.from_checkpoint(best, device="cpu")
    from .models.selection import SelectOptions
    from .predict import list_images
    from .predict.outputs import ImageOutputs
    from .predict.run import DEFAULT_SCORE

    predictions, val_images = out / "predictions", val_json.parent.parent / "val"
    paths = list_images(val_images)[:8]
    drawn = ImageOutputs(predictions, paths, val_images, predictor.class_names)
    for det in predictor.predict_paths(paths, SelectOptions(score_threshold=DEFAULT_SCORE)):
        drawn.add(det)
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
