"""Stage 7: serving predictions over HTTP (FastAPI on ONNX Runtime)."""
