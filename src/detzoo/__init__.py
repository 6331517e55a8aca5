"""detzoo: a PyTorch object-detection model zoo (SSD family, Faster R-CNN with DCNv2)."""

__version__ = "0.1.0"
