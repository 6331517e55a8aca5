"""Models: the registry and every zoo entry (importing this package registers them)."""

from . import zoo_faster_rcnn, zoo_ssd  # noqa: F401  (registers the SSD family and Faster R-CNN)
from .detector import Detector
from .registry import create_model, list_models, register_model

__all__ = ["Detector", "create_model", "list_models", "register_model"]
