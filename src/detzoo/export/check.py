"""The export check: run the traced PyTorch graph and ONNX Runtime on the same real images and compare what a
user gets - the final detections, matched one to one - and the raw outputs, within a tolerance derived from
float32 arithmetic on the model's own layers and on the score and box scale it really produces.

Why the tolerance is what it is (nothing here is tuned to a machine):

1. Both sides compute the same network in float32 (unit roundoff ``u = 2**-24``), with different kernels:
   another summation order, batch norm folded into the convolution, FMA or not, AVX2, AVX-512 or NEON blocking.
   A dot product of length ``n`` (a layer's fan-in: ``in_channels / groups x kh x kw``) is computed with a
   relative error of at most ``n u`` and typically ``sqrt(n) u`` (independent roundings, a random walk).
2. Batch norm keeps every layer's activations at unit scale, so the relative error a layer receives leaves it
   about as large, and the layers' own errors add: at worst in phase, ``u * sum_l sqrt(n_l)`` over the
   model's convolution and linear layers (the sum over all of them bounds every path through the network).
   Two implementations differ by at most the sum of their two errors (x 2), and the largest of the ~1e5-1e6
   compared outputs lies about ``sqrt(2 ln N) ~ 5`` typical errors out (x 5):
   ``rho = 10 u sum_l sqrt(n_l)``, the relative error budget of the raw outputs (5.7e-4 to 1.4e-3 for the
   zoo; the worst case ``2 u sum_l n_l``, 2e-3 to 1.1e-2, needs every rounding to go the same way).
3. Scores: a logit ``z`` computed to ``rho`` of the logit scale ``Z`` moves a sigmoid score by at most
   ``sigma'(z) = p (1 - p) <= 1/4`` times that, a softmax score by ``sum_j |dp_i/dz_j| = 2 p_i (1 - p_i)
   <= 1/2`` times the largest logit error: ``score tolerance = rho Z / 2``. ``Z`` is the model's real logit
   scale, read back from the reference scores: ``max |log(p / (1 - p))|`` (the sigmoid's logit; for a softmax
   the logit of one class against all others), with ``p`` kept in ``[u, 1 - u]``, the range in which a
   float32 score still carries information.
4. Boxes: decoding gives ``w = a exp(0.2 t_w)`` and ``cx = a_x + 0.1 t_x a``; a regression ``t`` computed to
   ``rho`` of its scale (|t| <= 10, a box 7x its anchor) moves a coordinate by at most ``rho`` times the
   anchor plus the box size: ``box tolerance = 2 rho B`` pixels, ``B`` the largest box coordinate of the
   reference (the input side for boxes inside the image). Two-stage models get the same budget over all of
   their layers (RPN, RoIAlign's sampling points and the box head).

The budget assumes a well-conditioned network, as trained ones are; a freshly initialised network whose batch
norm divides near-constant channels by near-zero spreads (statistics from a handful of images) cancels away
digits and exceeds it in float32 already - ``tests/test_export.py`` checks its networks against float64.
A broken export (other normalisation, resize, anchors, layout, a missing op) moves scores by 1e-2 to 1 and
boxes by pixels to hundreds of pixels, and most of its final detections find no counterpart; these tolerances
(for the zoo on coco128 images: scores 5e-4 to 5e-3, boxes 0.2 to 2 px) stay below that.

``candidates`` graphs are compared element by element and then through the runtime's selection (threshold,
top-k, NMS); ``detections`` graphs end with NMS. A score or an overlap within float noise of a threshold may
keep a detection on one side only, so the final detections are matched (same class, nearest box, within the
tolerances) and such one-sided ones may make up at most ``MAX_UNMATCHED`` of them; a broken export leaves
most unmatched.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.loader import Batch
from ..models.detector import CANDIDATES, IMAGES, ExportGraph
from ..predict.onnx_backend import OnnxBackend, split_detections

MAX_UNMATCHED = 0.01
UNIT_ROUNDOFF = 2.0 ** -24  # float32, round to nearest
LARGEST_OF_MANY = 5.0  # sqrt(2 ln N) for N ~ 1e5-1e6 compared outputs
IMPLEMENTATIONS = 2  # PyTorch's and ONNX Runtime's errors add


def relative_error_budget(module: nn.Module) -> float:
    """``rho = 2 x 5 x u x sum_l sqrt(fan_in_l)`` over every convolution / linear layer (any weight of rank
    >= 2, deformable convolutions included): see the module docstring."""
    fans = [m.weight[0].numel() for m in module.modules()
            if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() >= 2]
    return IMPLEMENTATIONS * LARGEST_OF_MANY * UNIT_ROUNDOFF * sum(math.sqrt(n) for n in fans)


def logit_scale(scores: torch.Tensor) -> float:
    """The model's logit scale as its float32 scores show it: ``max |log(p / (1 - p))|``, p in [u, 1 - u]."""
    if not scores.numel():
        return 0.0
    p = scores.double().clamp(UNIT_ROUNDOFF, 1 - UNIT_ROUNDOFF)
    return float((p / (1 - p)).log().abs().max())


@dataclass(frozen=True)
class Tolerance:
    """Largest differences that float32 arithmetic explains for outputs of a given scale."""

    relative: float  # rho, the relative error budget of the raw outputs

    def score(self, logit_scale: float) -> float:
        return 0.5 * self.relative * logit_scale

    def box_px(self, box_scale: float) -> float:
        return 2.0 * self.relative * box_scale

    def for_outputs(self, boxes: torch.Tensor, scores: torch.Tensor) -> tuple[float, float]:
        """(box tolerance in pixels, score tolerance) for reference outputs of this scale."""
        box_scale = float(boxes.abs().max()) if boxes.numel() else 0.0
        return self.box_px(box_scale), self.score(logit_scale(scores))


def _ratio(diff: float, tol: float) -> float:
    return diff / tol if tol > 0 else (math.inf if diff > 0 else 0.0)


@dataclass
class CheckResult:
    images: int = 0
    box_diff: float = 0.0  # largest difference of a box coordinate, input pixels
    score_diff: float = 0.0
    box_ratio: float = 0.0  # largest difference / the float32 tolerance of its batch (<= 1 passes)
    score_ratio: float = 0.0
    detections: int = 0  # final detections compared
    unmatched: int = 0  # final detections found by one side only

    def record(self, box_diff: float, score_diff: float, tol_px: float, tol_score: float) -> None:
        self.box_diff, self.score_diff = max(self.box_diff, box_diff), max(self.score_diff, score_diff)
        self.box_ratio = max(self.box_ratio, _ratio(box_diff, tol_px))
        self.score_ratio = max(self.score_ratio, _ratio(score_diff, tol_score))

    def passed(self) -> bool:
        """Every difference within its tolerance, and at most MAX_UNMATCHED one-sided final detections."""
        return self.box_ratio <= 1 and self.score_ratio <= 1 and self.unmatched <= MAX_UNMATCHED * self.detections

    def summary(self) -> str:
        text = (f"ONNX Runtime vs PyTorch on {self.images} image(s): largest difference {self.box_diff:.3g} px "
                f"(boxes), {self.score_diff:.3g} (scores); at most {self.box_ratio:.2g} and {self.score_ratio:.2g} "
                "of the float32 tolerance")
        if self.detections:
            text += f"; {self.unmatched} of {self.detections} final detections on one side only"
        return text


def check_export(graph: ExportGraph, backend: OnnxBackend, batches: Iterable[Batch],
                 relative: float | None = None) -> CheckResult:
    """Compare ``graph.module`` (eager) with the ONNX session on every graph input the backend makes.
    ``relative`` overrides the derived relative error budget ``rho`` (``relative_error_budget``)."""
    tolerance = Tolerance(relative if relative is not None else relative_error_budget(graph.module))
    result = CheckResult()
    for batch in batches:
        result.images += len(batch)
        for inputs in backend.graph_inputs(batch):
            with torch.no_grad():
                expected = [t.numpy() for t in graph.module(*(torch.from_numpy(v) for v in inputs.values()))]
            actual = backend.run(inputs)
            if graph.outputs == CANDIDATES:  # a dynamic batch: the whole batch in one run
                _compare_candidates(expected, actual, batch.image_sizes, backend, tolerance, result)
                continue
            count = len(inputs[IMAGES])
            for want, got in zip(split_detections(expected, count), split_detections(actual, count)):
                tol_px, tol_score = tolerance.for_outputs(want["boxes"], want["scores"])
                match_detections(want, got, tol_px, tol_score, result)
    return result


def _compare_candidates(expected: list[np.ndarray], actual: list[np.ndarray], image_sizes: list,
                        backend: OnnxBackend, tolerance: Tolerance, result: CheckResult) -> None:
    """Raw boxes and scores element by element, then the final detections the runtime's selection makes of
    each side's outputs (the same numbers, so the same tolerance)."""
    boxes, scores = torch.from_numpy(expected[0]), torch.from_numpy(expected[1])
    tol_px, tol_score = tolerance.for_outputs(boxes, scores)
    result.record(float(np.abs(expected[0] - actual[0]).max()), float(np.abs(expected[1] - actual[1]).max()),
                  tol_px, tol_score)
    theirs = backend.postprocess.select(torch.from_numpy(actual[0]), torch.from_numpy(actual[1]), image_sizes)
    for want, got in zip(backend.postprocess.select(boxes, scores, image_sizes), theirs):
        match_detections(want, got, tol_px, tol_score, result)


def match_detections(expected: dict, actual: dict, tol_px: float, tol_score: float, result: CheckResult) -> None:
    """Greedy matching in the reference's order: the same class and the nearest box (largest coordinate
    difference: for boxes this close, the highest IoU, and it also pairs boxes clipped to zero area), accepted
    within the tolerances; accumulates the differences and the one-sided count."""
    result.detections += max(len(expected["scores"]), len(actual["scores"]))
    used = torch.zeros(len(actual["scores"]), dtype=torch.bool)
    if len(expected["scores"]) and len(actual["scores"]):
        distance = (expected["boxes"][:, None] - actual["boxes"][None]).abs().amax(-1)
        distance[expected["labels"][:, None] != actual["labels"][None]] = float("inf")
    for i in range(len(expected["scores"])):
        if not len(actual["scores"]):
            break
        row = distance[i].masked_fill(used, float("inf"))
        j = int(row.argmin())
        score_diff = abs(float(expected["scores"][i] - actual["scores"][j]))
        if row[j] <= tol_px and score_diff <= tol_score:
            used[j] = True
            result.record(float(row[j]), score_diff, tol_px, tol_score)
    result.unmatched += max(len(expected["scores"]), len(actual["scores"])) - int(used.sum())
