"""Reading a labelled dataset from class folders, pre-split folders, a CSV or a mapping file."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from headstart.data.images import IMAGE_SUFFIXES, visible_images
from headstart.data.locations import ImagePath, ObjectURI, image_location
from headstart.data.split import SPLITS, TEST_PERCENT, VAL_PERCENT, check_percents, hashed_split
from headstart.errors import HeadstartError

SPLIT_FOLDER_NAMES = {
    "train": "train",
    "training": "train",
    "trainval": "train",  # the Oxford-IIIT Pet convention: training and validation together
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
Row = tuple[ImagePath, str, str | None]  # an image, its label and its given split, if any
_CSV_HEADER_WORDS = {"path", "file", "filename", "image", "label", "class", "split"}


@dataclass(frozen=True)
class Sample:
    path: ImagePath
    label: str
    split: str


@dataclass
class Dataset:
    """Labelled image files with their split. `given_splits` are those the user provided."""

    root: Path
    classes: list[str]
    samples: list[Sample]
    layout: str
    given_splits: frozenset[str] = field(default_factory=frozenset)

    def split(self, name: str) -> list[Sample]:
        return [sample for sample in self.samples if sample.split == name]

    def counts(self) -> dict[str, int]:
        found = Counter(sample.split for sample in self.samples)
        return {name: found.get(name, 0) for name in SPLITS}

    def evaluation_split(self) -> str:
        """The split an honest evaluation uses: test when there is one, else validation."""
        counts = self.counts()
        for name in ("test", "val"):
            if counts[name]:
                return name
        raise HeadstartError(
            f"{self.root}: no test or validation images to evaluate on "
            "(give a test/ folder or a --test-percent above 0)"
        )

    def index_of(self, label: str) -> int:
        return self.classes.index(label)

    def without(self, paths: set[Path]) -> tuple[Dataset, int]:
        """This dataset less the images at `paths` (resolved), and how many were left out."""
        kept = [
            s
            for s in self.samples
            if not (isinstance(s.path, Path) and s.path.resolve() in paths)  # URIs stay
        ]
        smaller = Dataset(self.root, self.classes, kept, self.layout, self.given_splits)
        _check_enough_images(smaller)
        return smaller, len(self.samples) - len(kept)


def load_dataset(
    source: str | Path, val_percent: float = VAL_PERCENT, test_percent: float = TEST_PERCENT
) -> Dataset:
    """Read a dataset from a folder of class folders, train/val/test folders, a CSV or a mapping.

    Images without a given split are assigned one by hashing their relative path.
    """
    check_percents(val_percent, test_percent)
    path = Path(source).expanduser()
    if not path.exists():
        raise HeadstartError(f"{path}: no such file or folder")
    if path.is_file():
        rows, layout = _read_listing(path)
        root = path.parent
    else:
        split_dirs = _split_folders(path)
        if split_dirs:
            rows, layout = _read_split_folders(path, split_dirs), "split folders"
        else:
            rows, layout = _read_class_folders(path, split=None), "class folders"
        root = path
    given = frozenset(split for _, _, split in rows if split)
    samples = _assign_splits(rows, root, given, val_percent, test_percent)
    classes = _sorted_labels({sample.label for sample in samples})
    dataset = Dataset(path, classes, samples, layout, given)
    _check_enough_images(dataset)
    return dataset


def _split_folders(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for child in sorted(root.iterdir()):
        split = SPLIT_FOLDER_NAMES.get(child.name.lower())
        if split and child.is_dir():
            if split in found:
                raise HeadstartError(f"{root}: both {found[split].name}/ and {child.name}/ given")
            found[split] = child
    if found and "train" not in found:
        raise HeadstartError(f"{root}: split folders {sorted(found)} given but no train/ folder")
    return found


def _read_split_folders(root: Path, split_dirs: dict[str, Path]) -> list[Row]:
    rows: list[Row] = []
    for split, folder in split_dirs.items():
        rows.extend(_read_class_folders(folder, split))
    return rows


def _read_class_folders(root: Path, split: str | None) -> list[Row]:
    class_dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    if not class_dirs:
        raise HeadstartError(f"{root}: no class folders (expected {root}/CLASS/image.jpg)")
    rows: list[Row] = []
    for class_dir in class_dirs:
        images = visible_images(class_dir)
        if not images:
            raise HeadstartError(f"{class_dir}: class folder has no images")
        rows.extend((image, class_dir.name, split) for image in images)
    return rows


def _read_listing(path: Path) -> tuple[list[Row], str]:
    """A CSV (path,label[,split]) or a CNTK-style mapping file (path<TAB>label)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise HeadstartError(
            f"{path}: is an image, not a dataset; give a folder of class folders, a CSV "
            "(path,label[,split]) or a mapping file (path<TAB>label)"
        )
    text = read_utf8(path)
    if path.suffix.lower() == ".csv":
        lines, layout = list(csv.reader(text.splitlines())), "csv"
    else:
        lines, layout = [line.split("\t") for line in text.splitlines()], "mapping file"
    rows: list[Row] = []
    for number, cells in enumerate(lines, start=1):
        cells = [cell.strip() for cell in cells]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and cells[0].lower() in _CSV_HEADER_WORDS:
            continue
        rows.append(_listing_row(path, number, cells))
    if not rows:
        raise HeadstartError(f"{path}: lists no images")
    return rows, layout


def read_utf8(path: Path) -> str:
    """A list file's text; anything but UTF-8 is one line naming the line it fails on."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise HeadstartError(
            f"{path} line {line}: not UTF-8 text (byte 0x{error.object[error.start]:02x}); "
            "save the list as UTF-8"
        ) from error
    except OSError as error:
        raise HeadstartError(f"{path}: cannot be read ({error.strerror or error})") from error


def _listing_row(listing: Path, number: int, cells: list[str]) -> Row:
    where = f"{listing} line {number}"
    if len(cells) < 2 or not cells[0] or not cells[1]:
        raise HeadstartError(f"{where}: expected 'path, label', got {cells!r}")
    image = image_location(cells[0], listing.parent, expand_user=True)
    # Objects are not asked for one by one here: one missing is skipped and named when read.
    if isinstance(image, Path) and not image.is_file():
        raise HeadstartError(f"{where}: no such image file {image}")
    split = None
    if len(cells) > 2 and cells[2]:
        split = SPLIT_FOLDER_NAMES.get(cells[2].lower())
        if split is None:
            raise HeadstartError(f"{where}: unknown split {cells[2]!r} (use train, val or test)")
    return image, cells[1], split


def _assign_splits(
    rows: list[Row],
    root: Path,
    given: frozenset[str],
    val_percent: float,
    test_percent: float,
) -> list[Sample]:
    # Splits the user gave are kept; only the missing ones are carved out of the training images.
    carve_val = val_percent if "val" not in given else 0.0
    carve_test = test_percent if not given else 0.0
    samples = []
    for image, label, split in rows:
        if split is None or split == "train":
            key = _relative_key(image, root)
            split = hashed_split(key, carve_val, carve_test)
        samples.append(Sample(image, label, split))
    return samples


def _relative_key(image: ImagePath, root: Path) -> str:
    """The path the split is hashed from: relative to the dataset, as written (a symbolic link
    keeps its own name, so moving what it points to never moves it between splits); for an
    object, its key in the store, so a copy between stores keeps its split."""
    if isinstance(image, ObjectURI):
        return image.key
    for path, base in ((image.absolute(), root.absolute()), (image.resolve(), root.resolve())):
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            continue
    return image.resolve().as_posix()


def _sorted_labels(labels: set[str]) -> list[str]:
    if all(label.isascii() and label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _check_enough_images(dataset: Dataset) -> None:
    per_class = Counter(sample.label for sample in dataset.samples)
    for label in dataset.classes:
        if per_class[label] < 2:
            raise HeadstartError(
                f"class {label!r} has {per_class[label]} image; at least 2 are needed"
            )
    if len(dataset.classes) < 2:
        raise HeadstartError(f"{dataset.root}: found one class ({dataset.classes[0]}); need two")
