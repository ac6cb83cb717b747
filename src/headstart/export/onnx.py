"""Exporting a classifier to one ONNX file: pixels in, calibrated probabilities out."""

from __future__ import annotations

import json
from pathlib import Path

from headstart.backbones.onnx_file import export_pixels_module
from headstart.errors import HeadstartError
from headstart.storage import atomic_write_bytes, check_writable_file


def export_classifier(classifier, path: Path, cache_dir: Path | None = None) -> Path:
    """One ONNX file: uint8 RGB pixels (N, H, W, 3) in, class probabilities out.

    Normalisation, backbone, head and softmax are all inside the graph; labels, backbone and
    preprocessing go into its metadata and a NAME.labels.txt beside it.
    """
    import onnx
    from torch import nn

    from headstart.backbones.network import PixelsToFeatures

    path = Path(path)
    check_export_target(path)
    backbone = classifier.extractor(cache_dir, "torch").backbone
    network = nn.Sequential(
        PixelsToFeatures(backbone.build_module(), classifier.preprocessing),
        _calibrated_head(classifier.head.module(), classifier.temperature),
        nn.Softmax(dim=1),
    )
    export_pixels_module(network, classifier.preprocessing.input_size, path, "probabilities")
    model = onnx.load(str(path))
    for key, value in onnx_metadata(classifier).items():
        model.metadata_props.add(key=key, value=value)
    atomic_write_bytes(path, model.SerializeToString())
    atomic_write_bytes(labels_path(path), ("\n".join(classifier.labels) + "\n").encode())
    return path


def labels_path(onnx_file: Path) -> Path:
    """The labels file that goes with an exported model: model.onnx -> model.labels.txt."""
    return Path(onnx_file).with_suffix(".labels.txt")


def check_export_target(onnx_file: Path) -> None:
    """Fail before exporting when the file cannot be written or would replace a user's file."""
    check_writable_file(onnx_file, "ONNX file")
    labels = labels_path(onnx_file)
    if labels.exists() and not Path(onnx_file).exists():
        raise HeadstartError(f"{labels}: exists and is not from an earlier export; move it away")


def _calibrated_head(head, temperature: float):
    """The head (a fresh module) with its logits already divided by the temperature."""
    import torch

    scaled = head.eval()
    with torch.no_grad():
        scaled[-1].weight /= temperature
        scaled[-1].bias /= temperature
    return scaled


def onnx_metadata(classifier) -> dict[str, str]:
    from headstart import __version__

    return {
        "headstart.format_version": "1",
        "headstart.version": __version__,
        "headstart.labels": json.dumps(classifier.labels),
        "headstart.backbone": json.dumps(classifier.backbone),
        "headstart.preprocessing": json.dumps(classifier.preprocessing.to_dict()),
        "headstart.input_size": json.dumps(list(classifier.preprocessing.input_size)),
    }
