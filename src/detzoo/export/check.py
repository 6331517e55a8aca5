"""The export check: run the traced PyTorch graph and ONNX Runtime on the same real images and measure the
largest difference.

``candidates`` graphs are compared element by element (boxes in pixels, scores). ``detections`` graphs end
with NMS, where a score or an overlap within float noise of a threshold may keep a box on one side only, so
their detections are matched (same image, same class, nearest box) and such one-sided detections may make up
at most ``MAX_UNMATCHED`` of them; a broken export leaves most detections unmatched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..data.loader import Batch
from ..models.detector import CANDIDATES, IMAGES, ExportGraph
from ..predict.onnx_backend import OnnxBackend, split_detections

MAX_UNMATCHED = 0.01


@dataclass
class CheckResult:
    images: int = 0
    box_diff: float = 0.0  # largest difference of a box coordinate, input pixels
    score_diff: float = 0.0
    detections: int = 0  # detections compared (detections graphs)
    unmatched: int = 0  # detections found by one side only

    def passed(self, tolerance: float, input_side: float) -> bool:
        """``tolerance`` is in score units and in box coordinates divided by the input side."""
        return (self.box_diff <= tolerance * input_side and self.score_diff <= tolerance
                and self.unmatched <= MAX_UNMATCHED * self.detections)

    def summary(self) -> str:
        text = (f"ONNX Runtime vs PyTorch on {self.images} image(s): largest difference {self.box_diff:.3g} px "
                f"(boxes), {self.score_diff:.3g} (scores)")
        if self.detections:
            text += f"; {self.unmatched} of {self.detections} detections on one side only"
        return text


def check_export(graph: ExportGraph, backend: OnnxBackend, batches: Iterable[Batch], tolerance: float
                 ) -> CheckResult:
    """Compare ``graph.module`` (eager) with the ONNX session on every graph input the backend makes."""
    result = CheckResult()
    tol_px = tolerance * max(backend.preprocess.size)
    for batch in batches:
        result.images += len(batch)
        for inputs in backend.graph_inputs(batch):
            with torch.no_grad():
                expected = [t.numpy() for t in graph.module(*(torch.from_numpy(v) for v in inputs.values()))]
            actual = backend.run(inputs)
            if graph.outputs == CANDIDATES:
                result.box_diff = max(result.box_diff, float(np.abs(expected[0] - actual[0]).max()))
                result.score_diff = max(result.score_diff, float(np.abs(expected[1] - actual[1]).max()))
                continue
            count = len(inputs[IMAGES])
            for want, got in zip(split_detections(expected, count), split_detections(actual, count)):
                match_detections(want, got, tol_px, tolerance, result)
    return result


def match_detections(expected: dict, actual: dict, tol_px: float, tol_score: float, result: CheckResult) -> None:
    """Greedy matching in the reference's order: the same class and the nearest box (largest coordinate
    difference), within the tolerances; accumulates the differences and the one-sided count."""
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
            result.box_diff = max(result.box_diff, float(row[j]))
            result.score_diff = max(result.score_diff, score_diff)
    result.unmatched += max(len(expected["scores"]), len(actual["scores"])) - int(used.sum())
