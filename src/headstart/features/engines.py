"""Runtimes that turn a batch of uint8 pixels into backbone features.

ONNX Runtime is the fast path on CPU (about 2-3x eager PyTorch on 2 cores); PyTorch serves GPUs
and is the reference the ONNX path is checked against.
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from headstart.backbones.registry import Backbone
from headstart.console import warn
from headstart.errors import HeadstartError
from headstart.threads import onnx_session_options

ENGINES = ("auto", "onnx", "torch")


class Engine(Protocol):
    def __call__(self, pixels: np.ndarray) -> np.ndarray: ...


def create_engine(
    backbone: Backbone, name: str, model_dir: Path, threads: int | None = None
) -> Engine:
    """Build the engine `name` (auto, onnx or torch); `model_dir` keeps exported ONNX files;
    `threads` caps its threads (default: the cores this process may use)."""

    def build():
        from headstart.backbones.network import PixelsToFeatures

        return PixelsToFeatures(backbone.build_module(), backbone.preprocessing)

    onnx_file = model_dir / f"{backbone.fingerprint}.onnx"
    return pixels_engine(build, backbone.preprocessing.input_size, name, onnx_file, threads)


def pixels_engine(
    build: Callable[[], Any],
    input_size: tuple[int, int],
    name: str,
    onnx_file: Path,
    threads: int | None = None,
) -> Engine:
    """An engine for the module `build()` makes (uint8 NHWC pixels in, one array out).

    For ONNX Runtime the module is exported to `onnx_file` the first time, then loaded from it.
    """
    check_engine(name)
    if name == "auto":
        name = "torch" if cuda_available() else "onnx"
    if name == "torch":
        if threads:
            import torch

            torch.set_num_threads(threads)
        return TorchEngine(build())
    if onnx_file.exists():
        try:
            return OnnxEngine(onnx_file, threads)
        except Exception as error:  # ONNX Runtime has its own exception types for bad files
            warn(f"{onnx_file} is damaged ({_first_line(error)}); exporting it again")
    if not _writable_folder(onnx_file.parent):
        onnx_file = Path(tempfile.mkdtemp(prefix="headstart-onnx-")) / onnx_file.name
    from headstart.backbones.onnx_file import export_pixels_module

    export_pixels_module(build(), input_size, onnx_file, "output")
    return OnnxEngine(onnx_file, threads)


def _writable_folder(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def check_engine(name: str) -> None:
    if name not in ENGINES:
        raise HeadstartError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")


def cuda_available() -> bool:
    """Whether PyTorch can use a CUDA GPU; without an NVIDIA device node it cannot, and the
    answer costs no import of PyTorch (about 1.5 s on a small machine)."""
    if "torch" not in sys.modules and not glob.glob("/dev/nvidia[0-9]*"):
        return False
    import torch

    return torch.cuda.is_available()


def exact_fp32():
    """Full fp32 on a GPU too: cuDNN convolutions without TF32 (a no-op on CPU)."""
    import torch

    return torch.backends.cudnn.flags(enabled=True, allow_tf32=False)


class TorchEngine:
    def __init__(self, module, device: str | None = None) -> None:
        import torch

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.module = module.eval().to(self.device, memory_format=torch.channels_last)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        # Cached features are shared between machines and engines, so they must not depend on
        # which one computed them.
        with torch.inference_mode(), exact_fp32():
            batch = torch.from_numpy(pixels).to(self.device, non_blocking=True)
            return self.module(batch).cpu().numpy()


class OnnxEngine:
    def __init__(self, onnx_file: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = onnx_session_options(threads)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(onnx_file), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: pixels})[0]
