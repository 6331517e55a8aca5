"""Prediction: the Predictor (images in, Detections out) with a PyTorch or ONNX Runtime backend."""

from .predictor import Predictor, list_images, unlabelled_data

__all__ = ["Predictor", "list_images", "unlabelled_data"]
