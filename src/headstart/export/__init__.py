"""Stage 7: exporting networks to ONNX so they run without PyTorch."""
