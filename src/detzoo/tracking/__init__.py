"""Tracking and counting on per-frame detections (layer 2: numpy, scipy and matplotlib's polygon test; no model):
ByteTrack with a constant-velocity Kalman filter (``bytetrack``, ``kalman``), lines and zones (``counting``),
offline gap filling (``gaps``) and generated videos with ground-truth tracks (``sequences``).
``predict.tracking`` runs them on video, ``serve.tracking`` on a browser's webcam frames."""
