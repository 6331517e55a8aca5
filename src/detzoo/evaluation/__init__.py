"""Evaluators behind one interface: ``reset()``, ``process(detections)``, ``evaluate() -> EvalResult``."""

from .base import EvalResult, Evaluator, build_evaluator, evaluate_detections

__all__ = ["EvalResult", "Evaluator", "build_evaluator", "evaluate_detections"]
