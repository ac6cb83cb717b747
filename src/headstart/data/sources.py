"""Reading a labelled dataset from class folders, pre-split folders, a CSV or a mapping file."""

from __future__ import annotations

import csv
import re
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
Row = tuple[ImagePath, tuple[str, ...], str | None]  # an image, its labels, its given split
_PATH_WORDS = {
    *("path", "file", "filename", "file_name", "filepath", "file_path", "fname", "name"),
    *("image", "image_id", "image_name", "image_path", "img", "id"),
}
_CSV_HEADER_WORDS = _PATH_WORDS | {"label", "class", "split"}
# A second column named so holds label sets: split at spaces, commas and bars too (fastai's
# and Kaggle's spaces, MovieLens's bars)
_LABEL_SET_WORDS = {"labels", "tags", "categories", "classes"}
_LABEL_SET_SEPARATORS = re.compile(r"[;,|\s]+")
MULTI_LABEL_SEPARATOR = ";"  # in any listing: a row holding it is a label set
_SEMICOLONS = re.compile(MULTI_LABEL_SEPARATOR)


@dataclass(frozen=True)
class Sample:
    """An image, its label and split; in a multi-label dataset `labels` is its set of labels
    (empty: none of them) and `label` that set as one line, for people."""

    path: ImagePath
    label: str
    split: str
    labels: tuple[str, ...] | None = None


@dataclass
class Dataset:
    """Labelled image files with their split. `given_splits` are those the user provided."""

    root: Path
    classes: list[str]
    samples: list[Sample]
    layout: str
    given_splits: frozenset[str] = field(default_factory=frozenset)
    multi_label: bool = False  # several labels a photo (or none): Sample.labels holds them

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
        smaller = Dataset(
            self.root, self.classes, kept, self.layout, self.given_splits, self.multi_label
        )
        _check_enough_images(smaller)
        return smaller, len(self.samples) - len(kept)


def load_dataset(
    source: str | Path,
    val_percent: float = VAL_PERCENT,
    test_percent: float = TEST_PERCENT,
    *,
    multi_label: bool = False,
) -> Dataset:
    """Read a dataset from a folder of class folders, train/val/test folders, a CSV or a mapping.

    Images without a given split are assigned one by hashing their relative path. A CSV row
    may carry several labels (`a;b`, or `a b` under a `labels` header, or a one-hot CSV):
    the dataset is then multi-label, as it is whenever `multi_label` is asked for.
    """
    check_percents(val_percent, test_percent)
    path = Path(source).expanduser()
    if not path.exists():
        raise HeadstartError(f"{path}: no such file or folder")
    if path.is_file():
        rows, layout = _read_listing(path, multi_label)
        root = path.parent
    else:
        split_dirs = _split_folders(path)
        if split_dirs:
            rows, layout = _read_split_folders(path, split_dirs), "split folders"
        else:
            rows, layout = _read_class_folders(path, split=None), "class folders"
        root = path
    given = frozenset(split for _, _, split in rows if split)
    multi_label = multi_label or any(len(labels) != 1 for _, labels, _ in rows)
    samples = _assign_splits(rows, root, given, val_percent, test_percent, multi_label)
    classes = _sorted_labels({label for _, labels, _ in rows for label in labels})
    dataset = Dataset(path, classes, samples, layout, given, multi_label)
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
        rows.extend((image, (class_dir.name,), split) for image in images)
    return rows


def _read_listing(path: Path, multi_label: bool) -> tuple[list[Row], str]:
    """A CSV (path,label[,split]; path,labels[,split]; path,LABEL1,LABEL2,... of 0/1) or a
    CNTK-style mapping file (path<TAB>label)."""
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
    numbered = [
        (number, [cell.strip() for cell in cells])
        for number, cells in enumerate(lines, start=1)
        if any(cell.strip() for cell in cells) and not cells[0].strip().startswith("#")
    ]
    header = _header(numbered)
    if header is not None and _one_hot_columns(header):
        return _one_hot_rows(path, numbered[1:], header), "one-hot csv"
    label_sets = multi_label or (header is not None and header[1].lower() in _LABEL_SET_WORDS)
    body = numbered[1:] if header is not None else numbered
    rows = [_listing_row(path, number, cells, label_sets) for number, cells in body]
    if not rows:
        raise HeadstartError(f"{path}: lists no images")
    return rows, layout


def _header(numbered: list[tuple[int, list[str]]]) -> list[str] | None:
    """The first line, when it is one of column names (its first cell names the path)."""
    if not numbered or numbered[0][0] != 1:
        return None
    cells = numbered[0][1]
    return cells if cells[0].lower() in _PATH_WORDS and len(cells) > 1 else None


def _one_hot_columns(header: list[str]) -> list[int]:
    """The label columns of a one-hot header (path, then two or more label names, and
    perhaps a split column); none for any other header."""
    columns = [i for i, name in enumerate(header[1:], start=1) if name.lower() != "split"]
    names = {header[i].lower() for i in columns}
    if len(columns) < 2 or names & (_CSV_HEADER_WORDS | _LABEL_SET_WORDS):
        return []
    return columns


def _one_hot_rows(listing: Path, body: list[tuple[int, list[str]]], header: list[str]) -> list[Row]:
    columns = _one_hot_columns(header)
    names = [header[i] for i in columns]
    problem = class_list_problem(names)
    if problem:
        raise HeadstartError(f"{listing} line 1: {problem}")
    split_column = next((i for i, n in enumerate(header) if n.lower() == "split"), None)
    rows: list[Row] = []
    for number, cells in body:
        where = f"{listing} line {number}"
        if len(cells) != len(header):
            raise HeadstartError(f"{where}: {len(cells)} cells for {len(header)} columns")
        flags = [cells[i] for i in columns]
        wrong = next((f for f in flags if f not in ("0", "1")), None)
        if wrong is not None:
            raise HeadstartError(f"{where}: {wrong!r} in a one-hot column (use 0 or 1)")
        labels = tuple(name for name, flag in zip(names, flags, strict=True) if flag == "1")
        split = cells[split_column] if split_column is not None else ""
        rows.append((_listed_image(where, cells[0], listing), labels, _given_split(where, split)))
    if not rows:
        raise HeadstartError(f"{listing}: lists no images")
    return rows


def class_list_problem(names: list[str]) -> str | None:
    """Why these column names cannot be labels: repeated, or empty."""
    if any(not name for name in names):
        return "a label column has no name"
    if len(set(names)) != len(names):
        return "a label column is named twice"
    return None


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


def _listing_row(listing: Path, number: int, cells: list[str], label_sets: bool) -> Row:
    """One line's image, labels and split. Labels split at ';' always; at spaces, commas and
    bars too when the listing holds label sets (a `labels` header, or --multi-label), which may
    then be empty."""
    where = f"{listing} line {number}"
    if not cells[0] or (len(cells) < 2 and not label_sets):
        raise HeadstartError(f"{where}: expected 'path, label', got {cells!r}")
    cell = cells[1] if len(cells) > 1 else ""
    labels = _labels_of(cell, label_sets)
    if not labels and not label_sets:
        raise HeadstartError(
            f"{where}: no label (a photo with no label belongs in a multi-label listing: "
            "a `labels` header, or --multi-label)"
        )
    split = cells[2] if len(cells) > 2 else ""
    return _listed_image(where, cells[0], listing), labels, _given_split(where, split)


def _labels_of(cell: str, label_sets: bool) -> tuple[str, ...]:
    separators = _LABEL_SET_SEPARATORS if label_sets else _SEMICOLONS
    return tuple(dict.fromkeys(part.strip() for part in separators.split(cell) if part.strip()))


def _listed_image(where: str, cell: str, listing: Path) -> ImagePath:
    image = image_location(cell, listing.parent, expand_user=True)
    # Objects are not asked for one by one here: one missing is skipped and named when read.
    if isinstance(image, Path) and not image.is_file():
        raise HeadstartError(f"{where}: no such image file {image}")
    return image


def _given_split(where: str, cell: str) -> str | None:
    if not cell:
        return None
    split = SPLIT_FOLDER_NAMES.get(cell.lower())
    if split is None:
        raise HeadstartError(f"{where}: unknown split {cell!r} (use train, val or test)")
    return split


def _assign_splits(
    rows: list[Row],
    root: Path,
    given: frozenset[str],
    val_percent: float,
    test_percent: float,
    multi_label: bool,
) -> list[Sample]:
    # Splits the user gave are kept; only the missing ones are carved out of the training images.
    carve_val = val_percent if "val" not in given else 0.0
    carve_test = test_percent if not given else 0.0
    samples = []
    for image, labels, split in rows:
        if split is None or split == "train":
            key = _relative_key(image, root)
            split = hashed_split(key, carve_val, carve_test)
        if multi_label:
            ordered = tuple(sorted(labels))  # "b;a" and "a;b" are one set
            samples.append(Sample(image, f"{MULTI_LABEL_SEPARATOR} ".join(ordered), split, ordered))
        else:
            samples.append(Sample(image, labels[0], split))
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
    per_class = Counter(label for sample in dataset.samples for label in labels_of(sample))
    for label in dataset.classes:
        if per_class[label] < 2:
            raise HeadstartError(
                f"class {label!r} has {per_class[label]} image; at least 2 are needed"
            )
    if not dataset.classes:
        raise HeadstartError(f"{dataset.root}: no image has a label")
    if len(dataset.classes) < 2 and not dataset.multi_label:
        raise HeadstartError(f"{dataset.root}: found one class ({dataset.classes[0]}); need two")


def labels_of(sample: Sample) -> tuple[str, ...]:
    """A sample's labels: its set in a multi-label dataset, else its one label."""
    return sample.labels if sample.labels is not None else (sample.label,)
