"""Evaluation pictures: precision/recall curves per class, the per-class AP bar chart, the confusion matrix,
and validation images with their ground truth beside the detections. The curves and APs are the ones the
evaluator printed (``EvalResult.curves`` / ``class_aps``, read from pycocotools' precision array or from
the VOC computation), so a picture never disagrees with the metric.

Drawn with matplotlib's object API on an Agg canvas and written atomically (``common.figures``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..common.figures import new_figure, save_figure
from .base import EvalResult

PR_CURVES, CLASS_AP, CONFUSION, SAMPLES = "pr_curves.png", "class_ap.png", "confusion_matrix.png", "samples.png"
LEGEND_CLASSES = 12  # more classes than this: thin unlabelled lines and the mean


def plot_pr_curves(result: EvalResult, path: Path, title: str = "") -> Path | None:
    """One panel per curve kind (COCO: IoU 0.5 and the mean over 0.5:0.95; VOC: the interpolated curve)."""
    kinds = [kind for kind, by_class in result.curves.items() if by_class]
    if not kinds:
        return None
    figure = new_figure(5.2 * len(kinds), 4.6)
    for index, kind in enumerate(kinds):
        axes = figure.add_subplot(1, len(kinds), index + 1)
        by_class, aps = result.curves[kind], result.class_aps[kind]
        labelled = len(by_class) <= LEGEND_CLASSES
        steps = "steps-pre" if "area" in kind else "default"  # VOC's area AP integrates the curve as steps
        for name, (recall, precision) in by_class.items():
            axes.plot(recall, precision, drawstyle=steps, linewidth=1.4 if labelled else 0.6,
                      alpha=1.0 if labelled else 0.35, color=None if labelled else "grey",
                      label=f"{name} {aps[name]:.3f}" if labelled else None)
        recalls = [r for r, _ in by_class.values()]
        if all(np.array_equal(recalls[0], r) for r in recalls):  # COCO: one recall grid, so the mean is mAP's
            mean = np.mean([p for _, p in by_class.values()], axis=0)
            axes.plot(recalls[0], mean, color="black", linewidth=2.4, label=f"mean {mean.mean():.3f}")
        axes.set_title(f"{kind} per class (mean {np.mean(list(aps.values())):.3f})", fontsize=10)
        axes.set_xlabel("recall")
        axes.set_ylabel("precision")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.02)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower left", fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    return save_figure(figure, path)


def plot_class_ap(result: EvalResult, path: Path, title: str = "") -> Path | None:
    """Horizontal bars: every class's AP of each kind the evaluator computed."""
    kinds = [kind for kind, aps in result.class_aps.items() if aps]
    if not kinds:
        return None
    names = list(dict.fromkeys(name for kind in kinds for name in result.class_aps[kind]))
    figure = new_figure(6.4, 1.4 + 0.22 * len(names) * max(1, len(kinds) / 1.5))
    axes = figure.add_subplot()
    height = 0.8 / len(kinds)
    for k, kind in enumerate(kinds):
        values = [result.class_aps[kind].get(name, np.nan) for name in names]
        axes.barh(np.arange(len(names)) + (k - (len(kinds) - 1) / 2) * height, values, height=height,
                  label=f"{kind} (mean {np.nanmean(values):.3f})")
    axes.set_yticks(range(len(names)), names, fontsize=8 if len(names) <= 30 else 6)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("AP")
    axes.grid(axis="x", alpha=0.3)
    figure.legend(loc="outside lower center", ncols=len(kinds), fontsize=8)
    axes.set_title(title or "AP per class", fontsize=10)
    return save_figure(figure, path)


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: Path, score: float, iou: float,
                   title: str = "") -> Path:
    """Rows: the true class (last: background, i.e. detections that match nothing); columns: the detected
    class (last: missed objects). Colour: the share of the row, numbers: counts (up to 20 classes)."""
    labels = [*class_names, "background"]
    side = max(5.0, 1.8 + 0.28 * len(labels))
    figure = new_figure(side + 1.0, side)
    axes = figure.add_subplot()
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the row")
    if len(labels) <= 21:
        for (row, column), count in np.ndenumerate(matrix):
            if count:
                axes.text(column, row, str(count), ha="center", va="center", fontsize=8,
                          color="white" if shares[row, column] > 0.6 else "black")
    fontsize = 8 if len(labels) <= 30 else 5
    axes.set_xticks(range(len(labels)), [*class_names, "missed"], rotation=90, fontsize=fontsize)
    axes.set_yticks(range(len(labels)), labels, fontsize=fontsize)
    axes.set_xlabel("detected as")
    axes.set_ylabel("true class")
    axes.set_title(title or f"confusion matrix (score >= {score:g}, IoU >= {iou:g})", fontsize=10)
    return save_figure(figure, path)


def plot_side_by_side(rows: list[tuple[str, np.ndarray, str, np.ndarray]], path: Path, title: str = "") -> Path | None:
    """Each row: (caption, ground truth drawn, caption, detections drawn), images as HxWx3 uint8 arrays."""
    if not rows:
        return None
    figure = new_figure(8.0, 0.4 + 3.0 * len(rows), dpi=80)
    for index, (left_title, left, right_title, right) in enumerate(rows):
        for column, (caption, image) in enumerate(((left_title, left), (right_title, right))):
            axes = figure.add_subplot(len(rows), 2, 2 * index + column + 1)
            axes.imshow(image)
            axes.set_title(caption, fontsize=8)
            axes.axis("off")
    if title:
        figure.suptitle(title, fontsize=10)
    return save_figure(figure, path, colors=256)
