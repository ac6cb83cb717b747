"""Stage 8: serving predictions over HTTP (FastAPI on ONNX Runtime)."""
