"""Exporting a pixels-in module to ONNX with a dynamic batch dimension."""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from pathlib import Path

from headstart.storage import atomic_write_bytes

ONNX_OPSET = 18


def export_pixels_module(module, input_size: tuple[int, int], path: Path, output: str) -> None:
    """Write `module` (uint8 NHWC pixels in) to `path` atomically, with a dynamic batch size."""
    import torch

    height, width = input_size
    example = torch.zeros((2, height, width, 3), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with tempfile.TemporaryDirectory() as scratch:
        scratch_file = Path(scratch) / "model.onnx"
        # The exporter narrates its passes on stdout and warns about internals; neither is ours.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                (example,),
                str(scratch_file),
                input_names=["pixels"],
                output_names=[output],
                dynamic_shapes=({0: batch},),
                opset_version=ONNX_OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        atomic_write_bytes(path, scratch_file.read_bytes())
