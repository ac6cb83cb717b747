"""Where an image lives: a local file (a Path), or an object named by a URI (s3://, gs://,
abfs://, hdfs://, file://) that pyarrow's filesystems read, on the driver and on every node
alike. Credentials and endpoints come from the environment (AWS_*, GOOGLE_*). An image URI's
query (`?endpoint_override=host:9000&scheme=http`) is refused unless the environment allows it
(HEADSTART_URI_OPTIONS=allow): a listing must not choose where the credentials are sent."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from headstart.errors import HeadstartError

URI_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# The most an image file may hold: bigger ones are named and skipped, never loaded.
MAX_IMAGE_BYTES = 256 * 1024 * 1024
URI_OPTIONS_SWITCH = "HEADSTART_URI_OPTIONS"


class ObjectURI:
    """An image named by URI, with the part of Path's interface headstart uses on images.
    Deliberately not os.PathLike: it can never be opened as a local file by mistake."""

    __slots__ = ("uri",)

    def __init__(self, uri: str) -> None:
        self.uri = uri

    @property
    def key(self) -> str:
        """Its path inside the store (no scheme, bucket or query), as the split hashes it."""
        return unquote(urlsplit(self.uri).path).lstrip("/")

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.key).suffix

    def absolute(self) -> ObjectURI:
        return self

    def read_bytes(self) -> bytes:
        """The object's bytes; OSError (naming why) when it cannot be read or is too large."""
        try:
            filesystem, path = _object(self.uri)
            with filesystem.open_input_stream(path) as handle:
                return _bounded(handle)
        except (ValueError, TypeError) as error:  # pyarrow: an unknown scheme, a bad URI
            raise OSError(str(error).splitlines()[0]) from error

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"ObjectURI({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectURI) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __lt__(self, other: ObjectURI) -> bool:
        return self.uri < other.uri


ImagePath = Path | ObjectURI


def is_uri(text: str) -> bool:
    return bool(URI_PATTERN.match(text))


def image_location(
    value: str | Path | ObjectURI, base: Path | None = None, expand_user: bool = False
) -> ImagePath:
    """A URI as an ObjectURI, else a local path (a relative one from `base` when given)."""
    if isinstance(value, ObjectURI):
        return value
    if isinstance(value, str) and is_uri(value):
        return ObjectURI(value)
    path = Path(value).expanduser() if expand_user else Path(value)
    return path if base is None or path.is_absolute() else base / path


def read_image(value: str | Path | ObjectURI) -> bytes:
    """An image file's or object's bytes; OSError (naming why) when it cannot be read or holds
    more than MAX_IMAGE_BYTES (a device or a huge file is never read whole)."""
    location = image_location(value)
    if isinstance(location, ObjectURI):
        return location.read_bytes()
    with open(location, "rb") as handle:
        return _bounded(handle)


def read_file(path: str | ImagePath) -> bytes | str:
    """The file's (or object's) bytes, or why they could not be read."""
    try:
        return read_image(path)
    except OSError as error:  # one line: a store's error can run to 90 (HDFS without a JVM)
        lines = str(error.strerror or error).strip().splitlines() or [type(error).__name__]
        return f"unreadable: {lines[0]}"
    except ValueError:  # a NUL byte in the name, say from a manifest: no file has one
        return "unreadable: not a valid file name"
    except MemoryError:
        return "unreadable: too large for the memory available"


def read_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A Ray Data batch with a `path` column (blank: no file), plus each file's bytes (`data`)
    and why it could not be read (`reason`). Here, not beside Ray: the processes that run it
    then import no more than this module."""
    read = [read_file(str(p)) if p else b"" for p in batch["path"]]
    data = object_column(r if isinstance(r, bytes) else b"" for r in read)
    reasons = object_column(r if isinstance(r, str) else "" for r in read)
    return {**batch, "data": data, "reason": reasons}


def object_column(values: Iterable[Any]) -> np.ndarray:
    """A 1-D object array of the values (bytes or strings kept whole, as Ray Data carries
    them; np.array would pad them to one width or make a 2-D array)."""
    items = list(values)
    column = np.empty(len(items), object)
    column[:] = items
    return column


def _bounded(handle: Any) -> bytes:
    data = handle.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise OSError(f"larger than {MAX_IMAGE_BYTES // 2**20} MiB")
    return data


def _object(uri: str) -> tuple[Any, str]:
    """(filesystem, path in it): one filesystem per store, made once (on S3, making one may
    ask the bucket for its region)."""
    parts = urlsplit(uri)
    if parts.query and os.environ.get(URI_OPTIONS_SWITCH) != "allow":
        raise OSError(
            "options in an image's URI (?...) are refused: they could send the store's "
            f"credentials elsewhere; set the endpoint in the environment, or {URI_OPTIONS_SWITCH}"
            "=allow to trust the listing"
        )
    filesystem, root = _filesystem(parts.scheme, parts.netloc, parts.query)
    return filesystem, root.rstrip("/") + unquote(parts.path)


def open_filesystem(location: str | Path, what: str) -> tuple[Any, str]:
    """(filesystem, root path in it) for a local folder or a store's URI: the one place a
    store is opened; HeadstartError naming the location and `what` it was to hold."""
    text = str(location)
    pafs = _pyarrow_fs(f"opening {what} needs")
    if not is_uri(text):
        return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())
    try:
        return pafs.FileSystem.from_uri(text)
    except (OSError, ValueError, TypeError) as error:  # pyarrow's errors derive from these
        raise HeadstartError(f"{location}: cannot open {what} ({error})") from error


@functools.lru_cache(maxsize=64)
def _filesystem(scheme: str, netloc: str, query: str) -> tuple[Any, str]:
    pafs = _pyarrow_fs("images named by URI need")
    return pafs.FileSystem.from_uri(f"{scheme}://{netloc}/" + (f"?{query}" if query else ""))


def _pyarrow_fs(who_needs: str) -> Any:
    try:
        import pyarrow.fs as pafs
    except ImportError as error:
        raise HeadstartError(
            f"{who_needs} pyarrow: pip install 'headstart[ray]' (or pyarrow)"
        ) from error
    return pafs
