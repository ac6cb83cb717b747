"""Exporting a classifier to one ONNX file: pixels in, calibrated probabilities out."""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

from headstart.backbones.onnx_file import export_pixels_module
from headstart.context import RunContext
from headstart.errors import HeadstartError
from headstart.export.runtime import SCORES_OUTPUT, THRESHOLDS_KEY
from headstart.model.folder import METADATA_FILE, model_key
from headstart.model.unknown import combine
from headstart.storage import atomic_write_bytes, check_writable_file

EXPORT_NAME = "model.onnx"  # the export's name in a model folder, its only file of that kind


MODEL_KEY = "headstart.model_key"  # in an export made for serving: the folder's model_key
SERVED_WITH_HEAT_MAPS = "+heatmap"  # after the key: the export has the heat maps' output


def export_classifier(
    classifier,
    path: Path,
    model_key: str | None = None,
    explain: bool = False,
    any_size: bool = False,
) -> Path:
    """One ONNX file: uint8 RGB pixels (N, H, W, 3) in, class probabilities out (of a
    multi-label model, `scores`: each label's sigmoid, its threshold in the metadata), then
    the unknown-image score when the model has one, and with `explain` every label's heat map
    (N, classes, h, w) as model/explanation.py computes it.

    Normalisation, backbone, head and softmax are all inside the graph; labels, backbone and
    preprocessing go into its metadata and a NAME.labels.txt beside it. With `any_size` the
    input is one decoded photo of any size instead (export/any_size.py).
    """
    import onnx

    path = Path(path)
    check_export_target(path)
    if any_size and explain:
        raise HeadstartError("--any-size and --explain: one or the other (maps need the crop)")
    network = exported_network(classifier, explain)
    outputs = [SCORES_OUTPUT if classifier.multi_label else "probabilities"]
    outputs += ["unknown_score"] if classifier.unknown is not None else []
    outputs += ["heatmap"] if explain else []
    export_pixels_module(network, classifier.preprocessing.input_size, path, tuple(outputs))
    model = onnx.load(str(path))
    for key, value in onnx_metadata(classifier).items():
        model.metadata_props.add(key=key, value=value)
    if model_key is not None:
        model.metadata_props.add(key=MODEL_KEY, value=model_key)
    if any_size:
        from headstart.export.any_size import with_any_size_input

        model = with_any_size_input(model, classifier.preprocessing)
    atomic_write_bytes(path, model.SerializeToString())
    atomic_write_bytes(labels_path(path), labels_file(classifier.labels))
    return path


def labels_file(labels: list[str]) -> bytes:
    """NAME.labels.txt: a label a line (the record refuses line breaks in labels); a class
    folder's name that is not UTF-8 keeps its own bytes."""
    return ("\n".join(labels) + "\n").encode("utf-8", "surrogateescape")


def labels_path(onnx_file: Path) -> Path:
    """The labels file that goes with an exported model: model.onnx -> model.labels.txt."""
    return Path(onnx_file).with_suffix(".labels.txt")


def check_export_target(onnx_file: Path) -> None:
    """Fail before exporting when the file cannot be written or would replace a user's file,
    or a model's own files."""
    path = Path(onnx_file)
    if path.suffix.lower() != ".onnx":
        raise HeadstartError(f"{path}: an ONNX export's file name ends in .onnx")
    if (path.parent / METADATA_FILE).exists() and path.name != EXPORT_NAME:
        raise HeadstartError(
            f"{path}: inside a model folder an export is written only as {EXPORT_NAME}"
        )
    check_writable_file(path, "ONNX file")
    labels = labels_path(path)
    check_writable_file(labels, "labels file")
    if labels.exists() and not Path(onnx_file).exists():
        raise HeadstartError(f"{labels}: exists and is not from an earlier export; move it away")


def exported_network(classifier, explain: bool):
    """Pixels to probabilities, the unknown-image score of model/unknown.py (nearest of the
    training features kept in the file, and the logits' energy) when the model has one, and
    the heat maps with `explain`."""
    import torch
    from torch import nn

    from headstart.backbones.network import PixelsToFeatures
    from headstart.model.explanation import heat_map_network

    head = classifier.head.module(classifier.temperature)
    unknown = classifier.unknown
    activation = torch.sigmoid if classifier.multi_label else partial(torch.softmax, dim=1)
    if explain:
        maps = classifier.backbone_maps()
        scorer = heat_map_network(maps, head, classifier.head_config, classifier.preprocessing)
    else:
        features = PixelsToFeatures(classifier.backbone_network(), classifier.preprocessing)
        scorer = _scorer(features, head)

    class Exported(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scorer = scorer
            bank = None if unknown is None else torch.from_numpy(unknown.bank.astype("float32"))
            self.register_buffer("bank", bank)

        def forward(self, pixels):
            vectors, logits, *maps = self.scorer(pixels)
            outputs = [activation(logits)]
            if self.bank is not None:
                kept = vectors[:, : self.bank.shape[1]]
                unit = kept / kept.norm(dim=1, keepdim=True).clamp_min(1e-12)
                distance = 1.0 - (unit @ self.bank.T).max(dim=1).values
                energy = -torch.logsumexp(logits, dim=1)
                outputs.append(combine(unknown.stats, distance, energy))
            return tuple(outputs + maps) if len(outputs) + len(maps) > 1 else outputs[0]

    return Exported().eval()


def _scorer(features, head):
    """Pixels to (features, logits)."""
    from torch import nn

    from headstart.backbones.network import as_cached

    class Scorer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features, self.head = features, head

        def forward(self, pixels):
            vectors = as_cached(self.features(pixels))
            return vectors, self.head(vectors)

    return Scorer()


def onnx_metadata(classifier) -> dict[str, str]:
    from headstart import __version__

    return {
        "headstart.format_version": "1",
        "headstart.version": __version__,
        "headstart.labels": json.dumps(classifier.labels),
        "headstart.backbone": json.dumps(classifier.record.backbone.to_dict()),
        "headstart.preprocessing": json.dumps(classifier.preprocessing.to_dict()),
        "headstart.input_size": json.dumps(list(classifier.preprocessing.input_size)),
        **(
            {"headstart.unknown_threshold": json.dumps(classifier.unknown.stats.threshold)}
            if classifier.unknown is not None
            else {}
        ),
        **(
            {THRESHOLDS_KEY: json.dumps(list(classifier.thresholds))}
            if classifier.multi_label
            else {}
        ),
    }


def exported_for_serving(model: Path, context: RunContext) -> Path:
    """MODEL/model.onnx with heat maps, exported again unless it was exported so from this
    very model (its record's key is in the file); in the cache folder instead when the model
    folder is read-only."""
    key = f"{model_key(model)}{SERVED_WITH_HEAT_MAPS}"
    onnx_file = model / EXPORT_NAME
    if not os.access(model, os.W_OK):
        onnx_file = context.workspace.served / f"{model_key(model)}.onnx"
    if _exported_key(onnx_file) != key:
        from headstart.model.classifier import Classifier  # torch, only to export

        export_classifier(Classifier.load(model, context), onnx_file, key, explain=True)
    return onnx_file


def _exported_key(onnx_file: Path) -> str | None:
    """The model key an export carries; None for a file that is missing or not ours."""
    if not onnx_file.is_file():
        return None
    import onnx

    try:
        model = onnx.load(str(onnx_file), load_external_data=False)
    except Exception:  # a damaged or foreign file: exported again
        return None
    return next((p.value for p in model.metadata_props if p.key == MODEL_KEY), None)
