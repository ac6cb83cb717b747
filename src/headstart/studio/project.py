"""A studio project on disk: PROJECT/photos/ is a plain class-folder dataset, PROJECT/model/ the
model folder `train` writes, PROJECT/cache/ the feature cache, so the CLI and the Python API
read and write the same project (`headstart train PROJECT/photos -o PROJECT/model`).

Every name that reaches the disk is checked here, once: a class is one visible folder inside
photos/, a photo one visible file inside its class folder, named by its content's digest.
Nothing is deleted: a removed photo or class is moved into PROJECT/trash/.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from headstart.data.images import DECODED_FORMATS, decode_rgb, visible_images
from headstart.errors import HeadstartError
from headstart.labelling.session import folder_names_problem
from headstart.model.record import class_names
from headstart.storage import atomic_write_bytes, check_writable_folder

MAX_CLASSES = 100
MAX_PHOTOS = 20_000  # in a project: each change retrains on all of them
_SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "BMP": ".bmp", "GIF": ".gif"}
_SUFFIXES |= {"WEBP": ".webp", "TIFF": ".tif"}


@dataclass(frozen=True)
class Added:
    name: str
    new: bool  # False: the class held these very bytes already


class Project:
    """One project folder; safe to use from several threads."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise HeadstartError(f"{self.root}: is a file; a project is a folder")
        check_writable_folder(self.root, "project")
        self.photos = self.root / "photos"
        self.model = self.root / "model"
        self.cache = self.root / "cache"
        self.trash = self.root / "trash"
        self.photos.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.changes = 0  # counts every change, so a trainer knows its model is stale

    # -- classes -----------------------------------------------------------------------------

    def classes(self) -> list[str]:
        return sorted(
            p.name for p in self.photos.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def create_class(self, name: str) -> None:
        with self._lock:
            self._check_new_class(name)
            (self.photos / name).mkdir()
            self.changes += 1

    def rename_class(self, name: str, new_name: str) -> None:
        with self._lock:
            folder = self.class_folder(name)
            self._check_new_class(new_name)
            folder.rename(self.photos / new_name)
            self.changes += 1

    def delete_class(self, name: str) -> Path:
        """Move the class folder, photos and all, into the trash; returns where it went."""
        with self._lock:
            folder = self.class_folder(name)
            target = self._trash_path(f"class-{name}")
            shutil.move(str(folder), str(target))
            self.changes += 1
            return target

    def class_folder(self, name: str) -> Path:
        """The folder of an existing class; a name that is not one is refused."""
        if name not in self.classes():
            raise LookupError(f"no class {name!r} in this project")
        return self.photos / name

    def _check_new_class(self, name: str) -> None:
        problem = class_names([name]) or folder_names_problem([name])
        if problem:
            raise HeadstartError(problem)
        existing = self.classes()
        if name.casefold() in {c.casefold() for c in existing}:
            raise HeadstartError(f"a class {name!r} exists already")
        if len(existing) >= MAX_CLASSES:
            raise HeadstartError(f"a project holds at most {MAX_CLASSES} classes")

    # -- photos ------------------------------------------------------------------------------

    def photo_names(self, label: str) -> list[str]:
        return [p.name for p in visible_images(self.class_folder(label))]

    def counts(self) -> dict[str, int]:
        return {label: len(self.photo_names(label)) for label in self.classes()}

    def add_photo(self, label: str, data: bytes, max_pixels: int) -> Added:
        """Check that the bytes are one readable image, then write them, as they came, to
        LABEL/DIGEST.EXT (atomically). ValueError for bytes that are not an image."""
        folder = self.class_folder(label)
        image_format = _checked_format(data, max_pixels)
        name = hashlib.sha256(data).hexdigest()[:20] + _SUFFIXES[image_format]
        with self._lock:
            if (folder / name).is_file():
                return Added(name, new=False)
            if sum(self.counts().values()) >= MAX_PHOTOS:
                raise HeadstartError(f"a project holds at most {MAX_PHOTOS} photos")
            atomic_write_bytes(folder / name, data)
            self.changes += 1
        return Added(name, new=True)

    def photo_path(self, label: str, name: str) -> Path:
        """An existing photo of the class, by a name the listing gave; nothing else."""
        if name not in self.photo_names(label):
            raise LookupError(f"no photo {name!r} in class {label!r}")
        return self.class_folder(label) / name

    def remove_photo(self, label: str, name: str) -> Path:
        with self._lock:
            path = self.photo_path(label, name)
            target = self._trash_path(f"{label}-{name}")
            shutil.move(str(path), str(target))
            self.changes += 1
            return target

    def move_photo(self, label: str, name: str, to: str) -> None:
        """Relabel a photo: move it into another class's folder."""
        with self._lock:
            path = self.photo_path(label, name)
            target = self.class_folder(to) / name
            if target.exists():  # these very bytes are there already
                path.unlink()
            else:
                path.rename(target)
            self.changes += 1

    def locate(self, path: str | Path) -> tuple[str, str] | None:
        """(class, name) of a path inside photos/, or None for one outside it."""
        try:
            parts = Path(path).resolve().relative_to(self.photos.resolve()).parts
        except ValueError:
            return None
        return (parts[0], parts[1]) if len(parts) == 2 else None

    def labelled_photos(self) -> list[tuple[Path, str]]:
        """Every photo with its class, in a stable order."""
        return [
            (self.photos / label / name, label)
            for label in self.classes()
            for name in self.photo_names(label)
        ]

    def _trash_path(self, name: str) -> Path:
        self.trash.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target, number = self.trash / f"{stamp}-{name}", 1
        while target.exists():
            number += 1
            target = self.trash / f"{stamp}-{number}-{name}"
        return target


def _checked_format(data: bytes, max_pixels: int) -> str:
    """The image's format, after decoding it whole (a file that only looks like an image, or
    holds too many pixels, is refused here, before it is written)."""
    if not data:
        raise ValueError("an empty file")
    decode_rgb(data, max_pixels=max_pixels)
    with Image.open(io.BytesIO(data), formats=DECODED_FORMATS) as image:
        image_format = image.format or ""
    if image_format not in _SUFFIXES:
        raise ValueError(f"{image_format or 'this'} format is not kept in a project")
    return image_format
