"""The model folder: `headstart.json` (everything but weights) naming its weights file.

The weights go to `model-<hash>.safetensors`, written before the JSON that names it with its
SHA-256, and the JSON is replaced atomically: that rename is the one commit point, so a reader
(or a run killed at any moment) sees the old model or the new one, never new weights with old
labels. Old weights files are removed only after the commit. No pickle anywhere, and a format
version so that later releases keep reading today's folders (version 1 had `model.safetensors`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load, save

from headstart.errors import HeadstartError
from headstart.storage import (
    CHECKPOINT_FILE,
    atomic_write_bytes,
    atomic_write_text,
    check_output_folder,
)

FORMAT = "headstart-model"
FORMAT_VERSION = 2
METADATA_FILE = "headstart.json"
LEGACY_WEIGHTS_FILE = "model.safetensors"  # format version 1
_WEIGHTS_NAME = re.compile(r"model-[0-9a-f]{16}\.safetensors")


def write_model_folder(
    folder: Path, tensors: dict[str, np.ndarray], metadata: dict[str, Any]
) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):  # a second writer (another `train -o` here) waits its turn
        _write(folder, tensors, metadata)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the folder itself (flock on its descriptor: no lock file)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


def _write(folder: Path, tensors: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
    # asarray, not ascontiguousarray: that one turns 0-d tensors (BatchNorm counters) into 1-d
    contiguous = {name: np.asarray(tensor, order="C") for name, tensor in tensors.items()}
    data = save(contiguous)
    sha256 = hashlib.sha256(data).hexdigest()
    weights = folder / f"model-{sha256[:16]}.safetensors"
    atomic_write_bytes(weights, data)
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    document["weights"] = {"file": weights.name, "sha256": sha256}
    document["versions"] = library_versions()
    atomic_write_text(folder / METADATA_FILE, json.dumps(document, indent=2) + "\n")
    for stale in [*folder.glob("model-*.safetensors"), folder / LEGACY_WEIGHTS_FILE]:
        if stale != weights:
            with contextlib.suppress(OSError):
                stale.unlink(missing_ok=True)


def check_model_output(folder: Path, data: str | Path | None = None) -> None:
    """Fail before training when `folder` cannot become a model folder (see
    storage.check_output_folder)."""
    check_output_folder(folder, "model", {METADATA_FILE, CHECKPOINT_FILE}, data)


def read_model_folder(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    folder = Path(folder)
    # A writer may replace the model between our two reads: the second try sees it whole.
    for attempt in range(2):
        metadata = read_metadata(folder)
        try:
            return _read_weights(folder, metadata), metadata
        except FileNotFoundError:
            if attempt == 1:
                raise HeadstartError(
                    f"{weights_path(folder, metadata)}: weights file missing"
                ) from None
    raise AssertionError("unreachable")


def read_metadata(folder: Path) -> dict[str, Any]:
    """headstart.json, checked to be a headstart model of a format version we can read."""
    metadata_file = Path(folder) / METADATA_FILE
    if not metadata_file.is_file():
        raise HeadstartError(f"{folder}: not a headstart model folder (no {METADATA_FILE})")
    try:
        metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
    except (ValueError, OSError, RecursionError) as error:  # RecursionError: nested too deep
        raise HeadstartError(f"{metadata_file}: not readable JSON ({error})") from error
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise HeadstartError(f"{metadata_file}: not a headstart model file")
    found = metadata.get("format_version")
    if not isinstance(found, int) or isinstance(found, bool) or found < 1:
        raise HeadstartError(f"{metadata_file}: format_version must be a whole number")
    if found > FORMAT_VERSION:
        raise HeadstartError(
            f"{metadata_file}: format version {found} is newer than this headstart "
            f"understands ({FORMAT_VERSION}); upgrade headstart"
        )
    return metadata


def model_key(folder: Path) -> str:
    """16 hex digits that change whenever the model does: a hash of its record, which names
    its weights by their own hash (labels, calibration and weights alike)."""
    read_metadata(folder)  # a model folder, or one line saying why not
    return hashlib.sha256((Path(folder) / METADATA_FILE).read_bytes()).hexdigest()[:16]


def weights_path(folder: Path, metadata: dict[str, Any]) -> Path:
    """The weights file the metadata names (only a plain name in the folder is accepted)."""
    if metadata["format_version"] == 1:
        return Path(folder) / LEGACY_WEIGHTS_FILE
    name = (
        metadata.get("weights", {}).get("file")
        if isinstance(metadata.get("weights"), dict)
        else None
    )
    if not isinstance(name, str) or not _WEIGHTS_NAME.fullmatch(name):
        raise HeadstartError(f"{Path(folder) / METADATA_FILE}: weights.file is missing or invalid")
    return Path(folder) / name


MAX_WEIGHTS_BYTES = 8 << 30  # far above any backbone headstart fine-tunes


def _read_weights(folder: Path, metadata: dict[str, Any]) -> dict[str, np.ndarray]:
    path = weights_path(folder, metadata)
    if path.exists() and not path.is_file():  # a FIFO would hang the read, /dev/zero never end
        raise HeadstartError(f"{path}: the weights are not a regular file")
    if path.exists() and path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise HeadstartError(f"{path}: over {MAX_WEIGHTS_BYTES >> 30} GiB; not headstart weights")
    data = path.read_bytes()
    expected = metadata.get("weights", {}).get("sha256") if metadata["format_version"] > 1 else None
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise HeadstartError(f"{path}: the weights do not match their checksum in {METADATA_FILE}")
    try:
        return load(data)
    except Exception as error:  # safetensors raises its own error type
        raise HeadstartError(f"{path}: cannot read weights ({error})") from error


def library_versions() -> dict[str, str]:
    found = {}
    for name in ("headstart", "torch", "timm", "onnxruntime", "numpy", "pillow"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
