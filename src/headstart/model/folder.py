"""The model folder: `model.safetensors` (weights) and `headstart.json` (everything else).

No pickle anywhere, and a format version so that later releases keep reading today's folders.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from headstart.errors import HeadstartError
from headstart.storage import atomic_write_bytes, atomic_write_text

FORMAT = "headstart-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "headstart.json"


def write_model_folder(
    folder: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]
) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    contiguous = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
    atomic_write_bytes(folder / WEIGHTS_FILE, save(contiguous))
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    document["versions"] = library_versions()
    atomic_write_text(folder / METADATA_FILE, json.dumps(document, indent=2) + "\n")


def read_model_folder(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    folder = Path(folder)
    metadata_file = folder / METADATA_FILE
    if not metadata_file.is_file():
        raise HeadstartError(f"{folder}: not a headstart model folder (no {METADATA_FILE})")
    try:
        metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
    except ValueError as error:
        raise HeadstartError(f"{metadata_file}: not valid JSON ({error})") from error
    if metadata.get("format") != FORMAT:
        raise HeadstartError(f"{metadata_file}: not a headstart model file")
    found = metadata.get("format_version")
    if not isinstance(found, int) or found > FORMAT_VERSION:
        raise HeadstartError(
            f"{metadata_file}: format version {found} is newer than this headstart "
            f"understands ({FORMAT_VERSION}); upgrade headstart"
        )
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except Exception as error:  # safetensors raises its own error type, missing file too
        raise HeadstartError(f"{folder / WEIGHTS_FILE}: cannot read weights ({error})") from error
    return tensors, metadata


def library_versions() -> dict[str, str]:
    found = {}
    for name in ("headstart", "torch", "timm", "onnxruntime", "numpy", "pillow"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
