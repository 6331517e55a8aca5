"""The inspector's one picture: objects per class, box sizes against COCO's buckets, aspect ratios, objects per
image, and a grid of sample images with their boxes (``engine.pictures.thumbnail``: drawn by
``visualize.draw``, as predictions are)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..common.figures import new_figure, save_figure
from ..data.records import DetectionData
from ..engine.pictures import ground_truth, thumbnail
from .stats import box_arrays

GRID_COLUMNS = 4


def draw_inspection(data: DetectionData, report: dict, samples: dict[int, torch.Tensor], path: Path) -> Path:
    stats = report["statistics"]
    rows_of_samples = -(-len(samples) // GRID_COLUMNS)
    figure = new_figure(12, 6.5 + 2.6 * rows_of_samples, dpi=72)
    grid = figure.add_gridspec(2 + rows_of_samples, 12, height_ratios=[1.2, 1] + [1.1] * rows_of_samples)
    figure.suptitle(f"{report['source']}: {stats['images']} images, {stats['objects']} objects, "
                    f"{len(data.class_names)} classes", fontsize=11)

    per_class = stats["per_class"]
    axes = figure.add_subplot(grid[0, :])
    axes.bar(range(len(per_class)), [r["objects"] for r in per_class], color="#4363d8")
    axes.set_xticks(range(len(per_class)), [r["class"] for r in per_class], rotation=90 if len(per_class) > 12 else 0,
                    fontsize=8 if len(per_class) <= 30 else 6)
    axes.set_xlim(-0.6, len(per_class) - 0.4)
    axes.set_ylabel("objects")
    axes.set_title("objects per class")
    axes.grid(axis="y", alpha=0.3)

    arrays = box_arrays(data)
    side = np.sqrt(arrays["area"])
    axes = figure.add_subplot(grid[1, 0:4])
    low = max(1.0, min(8.0, float(side.min()))) if len(side) else 8.0  # at least 8 .. 512 px: both COCO edges
    high = max(512.0, float(side.max())) if len(side) else 512.0
    axes.hist(side, bins=np.geomspace(low, high, 40), color="#3cb44b")
    axes.set_xscale("log")
    ticks = [t for t in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096) if low <= t <= high]
    axes.set_xticks(ticks, [str(t) for t in ticks])
    axes.minorticks_off()
    top = axes.get_ylim()[1] * 0.97
    for edge in (32, 96):
        axes.axvline(edge, color="black", linestyle="--", linewidth=1)
    for x, label in ((np.sqrt(low * 32), "small"), (np.sqrt(32 * 96), "medium"), (np.sqrt(96 * high), "large")):
        axes.text(x, top, label, fontsize=7, va="top", ha="center")
    sizes = stats["boxes"]["size_buckets"]
    axes.set_title(f"box side sqrt(area), px: small {sizes['small']}, medium {sizes['medium']}, "
                   f"large {sizes['large']}", fontsize=9)
    axes.set_xlabel("px (log scale)")

    axes = figure.add_subplot(grid[1, 4:8])
    with np.errstate(divide="ignore", invalid="ignore"):
        log_aspect = np.log2(arrays["width"] / arrays["height"])
    log_aspect = log_aspect[np.isfinite(log_aspect)]
    if len(log_aspect):
        axes.hist(log_aspect, bins=40, color="#f58231")
    ticks = [-3, -2, -1, 0, 1, 2, 3]
    axes.set_xticks(ticks, ["1/8", "1/4", "1/2", "1", "2", "4", "8"])
    axes.set_title("aspect ratio width / height (log scale)", fontsize=9)

    axes = figure.add_subplot(grid[1, 8:12])
    histogram = stats["objects_per_image"]["histogram"]
    axes.bar(list(histogram), list(histogram.values()), color="#911eb4")
    axes.tick_params(axis="x", labelsize=7)
    axes.set_title(f"objects per image ({stats['images_without_objects']} images without)", fontsize=9)

    for k, index in enumerate(sorted(samples)):
        row, column = divmod(k, GRID_COLUMNS)
        axes = figure.add_subplot(grid[2 + row, 3 * column: 3 * column + 3])
        record = data.records[index]
        axes.imshow(thumbnail(samples[index], ground_truth(record, data.class_names), scores=False))
        axes.set_title(f"{record.path.name} ({record.num_objects})", fontsize=8)
        axes.axis("off")
    return save_figure(figure, path, colors=256)
