"""`export -o model.tflite`: the ONNX export's network as one LiteRT (TFLite) file, through
litert-torch (the `tflite` extra; no TensorFlow).

Input `pixels`: uint8 RGB (1, h, w, 3), the resized and centre-cropped photo (the preprocessing
is in the file's metadata, as in the ONNX export's); outputs `probabilities` (of a multi-label
model, `scores` with the thresholds in the metadata) and, when the model has one,
`unknown_score`. The same metadata entries as the ONNX file's (labels, backbone,
preprocessing, unknown threshold) are stored as TFLite metadata buffers, and NAME.labels.txt
is written beside it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from headstart.errors import HeadstartError
from headstart.export.onnx import labels_file, labels_path, onnx_metadata
from headstart.export.runtime import SCORES_OUTPUT, THRESHOLDS_KEY
from headstart.storage import atomic_write_bytes, check_writable_file

INPUT = "pixels"
EXTRA = "pip install 'headstart[tflite]'"


def export_tflite(classifier, path: Path) -> Path:
    """Write the classifier as a .tflite file (and its labels file); returns the path."""
    path = Path(path)
    check_tflite_target(path)
    litert_torch = _litert_torch()
    import torch

    network = _named(classifier)
    height, width = classifier.preprocessing.input_size
    sample = {INPUT: torch.zeros((1, height, width, 3), dtype=torch.uint8)}
    with _quiet(litert_torch):
        converted = litert_torch.convert(network, sample_kwargs=sample).model_content()
    data = with_metadata(converted, onnx_metadata(classifier))
    atomic_write_bytes(path, data)
    atomic_write_bytes(labels_path(path), labels_file(classifier.labels))
    return path


def check_tflite_target(path: Path) -> None:
    if path.suffix.lower() != ".tflite":
        raise HeadstartError(f"{path}: a TFLite export's file name ends in .tflite")
    check_writable_file(path, "TFLite file")
    check_writable_file(labels_path(path), "labels file")


def with_metadata(model: bytes, entries: dict[str, str]) -> bytes:
    """The flatbuffer with each entry added as a named metadata buffer (UTF-8 text)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    tree = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    tree.metadata = list(tree.metadata or [])
    for name, value in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(value.encode("utf-8"), np.uint8)
        tree.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = name, len(tree.buffers) - 1
        tree.metadata.append(entry)
    builder = flatbuffers.Builder(len(model) + 4096)
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_metadata(model: bytes) -> dict[str, str]:
    """The headstart entries of a .tflite file's metadata."""
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(model, 0)
    entries = {}
    for index in range(root.MetadataLength()):
        entry = root.Metadata(index)
        name = (entry.Name() or b"").decode("utf-8", "replace")
        if name.startswith("headstart."):
            entries[name] = root.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode("utf-8")
    return entries


class TfliteClassifier:
    """A .tflite export run by ai-edge-litert's interpreter: probabilities for network inputs."""

    def __init__(self, path: str | Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        from headstart.backbones.preprocessing import Preprocessing

        self.path = Path(path)
        metadata = read_metadata(self.path.read_bytes())
        if "headstart.labels" not in metadata:
            raise HeadstartError(f"{self.path}: not exported by headstart (no labels metadata)")
        self.labels: list[str] = json.loads(metadata["headstart.labels"])
        self.thresholds: tuple[float, ...] = tuple(json.loads(metadata.get(THRESHOLDS_KEY, "[]")))
        self.preprocessing = Preprocessing.from_dict(
            json.loads(metadata["headstart.preprocessing"])
        )
        self.runner = Interpreter(model_path=str(self.path)).get_signature_runner()

    def outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Every output for uint8 pixels (N, h, w, 3), one photo a run (the file's batch is 1)."""
        runs = [self.runner(**{INPUT: one[None]}) for one in np.asarray(pixels, np.uint8)]
        return {name: np.concatenate([run[name] for run in runs]) for name in runs[0]}

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities, or a multi-label file's scores (a sigmoid a label)."""
        return self.outputs(pixels)[SCORES_OUTPUT if self.thresholds else "probabilities"]


def _named(classifier):
    """The ONNX export's network, its outputs named (the file's signature keeps the names)."""
    from torch import nn

    from headstart.export.onnx import exported_network

    network = exported_network(classifier, explain=False)
    names = [SCORES_OUTPUT if classifier.multi_label else "probabilities"]
    names += ["unknown_score"] if classifier.unknown is not None else []

    class Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, pixels):
            outputs = self.network(pixels)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            return dict(zip(names, outputs, strict=True))

    return Named().eval()


def _litert_torch():
    # its converter logs each step through absl in C++, and torchao warns through torch's logging
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GLOG_minloglevel", "2")
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    try:
        import litert_torch
    except ImportError as error:
        raise HeadstartError(f"a TFLite export needs litert-torch: {EXTRA}") from error
    return litert_torch


@contextlib.contextmanager
def _quiet(litert_torch):
    """litert-torch prints each conversion step; headstart's own line says what was written."""
    console = litert_torch.progress.console
    console.quiet, before = True, console.quiet
    try:
        yield
    finally:
        console.quiet = before
