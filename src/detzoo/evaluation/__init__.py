"""Evaluators behind one interface: ``reset()``, ``process(detections)``, ``evaluate() -> EvalResult``."""

from .base import EvalResult, Evaluator, build_evaluator

__all__ = ["EvalResult", "Evaluator", "build_evaluator"]
