"""Deployment: ONNX export with self-describing metadata (``onnx_export``), its check against PyTorch
(``check``), ONNX Runtime as a Predictor backend (``runtime``) and INT8 static quantization (``quantize``).
Needs the ``deploy`` extra (onnx, onnxruntime); nothing here is imported by training or evaluation."""
