"""Stage 6: exporting networks to ONNX so they run without PyTorch."""
