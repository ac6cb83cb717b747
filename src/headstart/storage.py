"""Files on disk: atomic writes (a reader sees the old file or the new one, never half of one),
and groups of tensors kept under name prefixes in one safetensors file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def tensor_group(tensors: dict[str, T], prefix: str) -> dict[str, T]:
    """The tensors named `prefix`..., with the prefix taken off their names."""
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
