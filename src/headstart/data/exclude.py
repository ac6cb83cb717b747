"""Lists of images to leave out of training: the doctor's issues.csv, or one path a line."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from headstart.data.sources import read_utf8
from headstart.errors import HeadstartError
from headstart.storage import unquoted

MAX_BYTES = 256 * 1024 * 1024  # a list of a few million paths; larger is not a list


def read_exclusions(listing: Path) -> set[Path]:
    """Resolved paths listed in `listing`.

    A CSV whose header has a `path` column (rows with an empty path, such as the doctor's
    dataset-wide findings, are ignored), or plain text with one path a line. Relative paths
    are relative to the list's folder, as in dataset CSVs.
    """
    listing = Path(listing).expanduser()
    if not listing.is_file():
        what = "a folder" if listing.is_dir() else "no such file"
        raise HeadstartError(f"{listing}: {what}; give issues.csv or a list of paths")
    if listing.stat().st_size > MAX_BYTES:
        raise HeadstartError(f"{listing}: over {MAX_BYTES >> 20} MiB; not a list of paths")
    text = read_utf8(listing)
    # Lines end at \n alone: a name may hold U+2028 or other characters splitlines() breaks at.
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    header = next(csv.reader(lines[:1]), [])
    if "path" in [cell.strip().lower() for cell in header]:
        column = [cell.strip().lower() for cell in header].index("path")
        rows = list(csv.reader(io.StringIO(text, newline="")))[1:]  # quoted newlines kept
        named = [unquoted(row[column]) if len(row) > column else "" for row in rows]
    else:
        named = [line for line in lines if not line.lstrip().startswith("#")]
    return {_resolve(listing, name.strip()) for name in named if name.strip()}


def _resolve(listing: Path, name: str) -> Path:
    try:
        path = Path(name).expanduser()
        return (path if path.is_absolute() else listing.parent / path).resolve()
    except (OSError, ValueError, RuntimeError) as error:  # NUL, a loop of links, ~nosuchuser
        raise HeadstartError(f"{listing}: cannot use the path {name!r} ({error})") from error
