"""Runtimes that turn a batch of uint8 pixels into backbone features.

ONNX Runtime is the fast path on CPU (about 2-3x eager PyTorch on 2 cores); PyTorch serves GPUs
and is the reference the ONNX path is checked against.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from headstart.backbones.registry import Backbone
from headstart.errors import HeadstartError

ENGINES = ("auto", "onnx", "torch")


class Engine(Protocol):
    def __call__(self, pixels: np.ndarray) -> np.ndarray: ...


def cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def create_engine(backbone: Backbone, name: str, model_dir: Path) -> Engine:
    """Build the engine `name` (auto, onnx or torch); `model_dir` keeps exported ONNX files."""
    if name not in ENGINES:
        raise HeadstartError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
    if name == "auto":
        name = "torch" if _cuda_available() else "onnx"
    if name == "torch":
        return TorchEngine(backbone)
    return OnnxEngine(backbone, model_dir / f"{backbone.fingerprint}.onnx")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class TorchEngine:
    def __init__(self, backbone: Backbone, device: str | None = None) -> None:
        import torch

        from headstart.backbones.network import PixelsToFeatures

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        module = PixelsToFeatures(backbone.build_module(), backbone.preprocessing)
        self.module = module.eval().to(self.device, memory_format=torch.channels_last)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            batch = torch.from_numpy(pixels).to(self.device, non_blocking=True)
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return self.module(batch).float().cpu().numpy()
            return self.module(batch).numpy()


class OnnxEngine:
    def __init__(self, backbone: Backbone, onnx_file: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        if not onnx_file.exists():
            _export_backbone(backbone, onnx_file)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpu_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(onnx_file), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"pixels": pixels})[0]


def _export_backbone(backbone: Backbone, onnx_file: Path) -> None:
    from headstart.backbones.network import PixelsToFeatures
    from headstart.export.onnx import export_pixels_module

    module = PixelsToFeatures(backbone.build_module(), backbone.preprocessing)
    export_pixels_module(module, backbone.preprocessing.input_size, onnx_file, "features")
