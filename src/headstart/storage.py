"""Files on disk: atomic writes (a reader sees the old file or the new one, never half of one),
groups of tensors kept under name prefixes in one safetensors file, and CSV cells no
spreadsheet runs."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TextIO, TypeVar

from headstart.errors import HeadstartError

T = TypeVar("T")


# An interrupted fine-tuning run's state, kept in its model folder until the run finishes.
CHECKPOINT_FILE = "checkpoint.safetensors"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp makes files 0600; written files get the usual mode the user's umask gives.
_FILE_MODE = 0o666 & ~_umask()


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A file to write that appears at `path` only when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, _FILE_MODE)
        with os.fdopen(handle, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as file:
        file.write(data)


def check_writable_file(path: Path, what: str = "output") -> None:
    """Fail before any work when `path` cannot be written as a file."""
    path = Path(path)
    if path.is_dir():
        raise HeadstartError(f"{path}: is a folder; give a file name for the {what}")
    if path.exists() and not path.is_file():  # a device, a FIFO, a socket: never replaced
        raise HeadstartError(f"{path}: is not a regular file; give a file name for the {what}")
    check_writable_folder(path.parent, what)


def check_output_folder(
    folder: Path, what: str, own: Iterable[str], data: str | Path | None = None
) -> None:
    """Fail before any work when `folder` cannot hold this output: a file; not writable; a
    folder of other things (none of the `own` files of an earlier output: its files would sit
    beside, or be taken for, the output's); or inside the folder dataset `data`, whose next
    read would take the output's pictures for photos."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise HeadstartError(f"{folder}: is a file; give a folder for the {what} (-o)")
    check_writable_folder(folder, what)
    if folder.is_dir():
        names = {p.name for p in folder.iterdir()}
        if names and not names & set(own):
            raise HeadstartError(
                f"{folder}: holds other files and is not a {what} folder; give a new or empty "
                "folder (-o)"
            )
    if data is not None and Path(data).is_dir():
        inside = folder.resolve().is_relative_to(Path(data).resolve())
        if inside:
            raise HeadstartError(
                f"{folder}: inside the dataset {data}, whose next read would take the {what}'s "
                "files for photos; give a folder outside it (-o)"
            )


def check_writable_folder(folder: Path, what: str = "output") -> None:
    """Fail before any work when files cannot be created in `folder` (made if missing)."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    if not existing.is_dir():
        raise HeadstartError(f"{existing}: is a file, so the {what} folder {folder} cannot be made")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise HeadstartError(f"{existing}: not writable, so the {what} cannot be written there")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def tensor_group(tensors: dict[str, T], prefix: str) -> dict[str, T]:
    """The tensors named `prefix`..., with the prefix taken off their names."""
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


# A cell opening with one of these is a formula to a spreadsheet (OWASP, CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: Any) -> Any:
    """A CSV cell no spreadsheet runs: text that opens like a formula, after any quotes we
    added, gets one more leading quote; numbers, and text that reads as a number ("-0.25"),
    are left as they are."""
    if not isinstance(cell, str) or not _opens_formula(cell):
        return cell
    try:
        float(cell)
        return cell
    except ValueError:
        return "'" + cell


def unquoted(cell: str) -> str:
    """A cell as it was before `spreadsheet_safe` quoted it (what a reader of our CSVs wants)."""
    return cell[1:] if cell.startswith("'") and _opens_formula(cell) else cell


def _opens_formula(cell: str) -> bool:
    return cell.lstrip("'").startswith(FORMULA_START)


class SafeCsvWriter:
    """csv.writer whose cells pass through `spreadsheet_safe`, and whose cells holding a line
    break of either kind are quoted whatever the line terminator (csv quotes only the
    terminator's own characters, so "a\rb" was written bare under "\n")."""

    def __init__(self, file: TextIO, lineterminator: str = "\r\n", **options: Any) -> None:
        self._file = file
        self._terminator = lineterminator
        self._row = io.StringIO()
        self._writer = csv.writer(self._row, lineterminator="\r\n", **options)

    def writerow(self, row: Iterable[Any]) -> None:
        self._row.seek(0)
        self._row.truncate()
        self._writer.writerow([spreadsheet_safe(cell) for cell in row])
        self._file.write(self._row.getvalue().removesuffix("\r\n") + self._terminator)

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)
