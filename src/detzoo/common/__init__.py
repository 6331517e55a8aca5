"""The bottom layer every package may import: configuration, the Detections type, user-facing errors,
atomic file writes, checkpoint I/O, device choice and torch.distributed helpers. Nothing here imports
another detzoo package (``tests/test_layers.py`` checks the whole import order)."""
