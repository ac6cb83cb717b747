"""A labelling session: the pool's photos, the labels given so far, the next suggestions, and
a head refitted in the background every few labels.

Labels are files: each labelled photo is copied into DATASET/LABEL/ (written to a temporary
name, then renamed), so DATASET is a class-folder dataset `train` reads as it is, and the
user's own photos are never moved or altered. Undo removes the copy it made, nothing else.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headstart.data.images import visible_images
from headstart.data.locations import ImagePath, read_file
from headstart.errors import HeadstartError
from headstart.features.extract import FeatureExtractor
from headstart.labelling.strategies import embedded
from headstart.labelling.suggest import (
    Labelled,
    default_picks,
    head_probabilities,
    leading,
    unlabelled,
)
from headstart.model.record import class_names
from headstart.storage import atomic_write_bytes, check_writable_folder
from headstart.threads import Rerun
from headstart.training.choice import stratified_folds
from headstart.training.solver import DEFAULT_L2, fit_linear

SHOWN = 12  # suggestions on the page at once
REFIT_EVERY = 5  # labels between background refits
MAX_CLASSES = 9  # keys 1-9


@dataclass
class Card:
    """A pool photo on the page: its position in the pool, and what is suggested for it."""

    photo: int
    suggested: str | None
    reason: str


@dataclass
class Given:
    photo: int
    label: str
    written: Path | None  # the copy this label made (None for a skip)


@dataclass(frozen=True)
class LeftOut:
    """Pool photos never shown: unreadable, already in the dataset, copies of another."""

    unreadable: int
    already_labelled: int
    copies: int


@dataclass
class Progress:
    """What the page shows beside the photos."""

    labelled: dict[str, int]
    accuracy: float | None  # cross-validated on the labelled photos, once each class has 2
    refits: int
    left: int  # pool photos neither labelled nor skipped


@dataclass
class Session:
    """One user's labelling of `pool` into `dataset` (a folder of class folders)."""

    pool: list[ImagePath]
    dataset: Path
    classes: list[str]
    extractor: FeatureExtractor
    seed: int = 0
    features: np.ndarray = field(init=False, repr=False)
    kept: list[int] = field(init=False)  # pool positions that have features
    width: int | None = field(init=False)  # the leading features used (the pooled head's)
    left_out: LeftOut = field(init=False)
    _x: np.ndarray = field(init=False, repr=False)  # labelled photos' features (dataset's own)
    _y: np.ndarray = field(init=False, repr=False)
    _done: dict[int, Given] = field(init=False, default_factory=dict)
    _history: list[Given] = field(init=False, default_factory=list)
    _cards: list[Card] = field(init=False, default_factory=list)
    _probabilities: np.ndarray | None = field(init=False, default=None)
    _accuracy: float | None = field(init=False, default=None)
    _refits: int = field(init=False, default=0)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _refits_due: Rerun = field(init=False)

    def __post_init__(self) -> None:
        self._refits_due = Rerun(self._refit)
        problem = class_names(self.classes) or folder_names_problem(self.classes)
        if problem or not 2 <= len(self.classes) <= MAX_CLASSES:
            raise HeadstartError(
                f"labels {self.classes}: {problem or f'give 2 to {MAX_CLASSES} (keys 1-9)'}"
            )
        check_writable_folder(self.dataset, "dataset")
        self.width = self.extractor.backbone.distance_features
        result = self.extractor.extract_files(self.pool, False, "Pool")
        known = self._dataset_photos(result.features.shape[1])
        # Unreadable files, photos already in the dataset and copies are never shown.
        candidates, already, copies = unlabelled(result, known, self.width)
        self.left_out = LeftOut(len(result.skipped), already, copies)
        self.kept = [result.kept[i] for i in candidates]
        self.features = leading(result.features[candidates], self.width)
        self._x, self._y = leading(known.x, self.width), known.y
        self._refit()
        self._suggest()

    # -- what the page reads ---------------------------------------------------------------

    def cards(self) -> list[Card]:
        with self._lock:
            return list(self._cards)

    def progress(self) -> Progress:
        with self._lock:
            counts = {
                label: int((self._all_y() == i).sum()) for i, label in enumerate(self.classes)
            }
            left = len(self.kept) - len(self._done)
            return Progress(counts, self._accuracy, self._refits, left)

    def photo(self, position: int) -> ImagePath:
        if not 0 <= position < len(self.pool):
            raise HeadstartError(f"no photo {position} in the pool")
        return self.pool[position]

    # -- what the user does ----------------------------------------------------------------

    def label(self, position: int, label: str) -> Path:
        """Copy the pool photo into DATASET/label/ and take it off the suggestions."""
        if label not in self.classes:
            raise HeadstartError(f"label {label!r} is not one of {self.classes}")
        with self._lock:
            self._check_open(position)
            written = self._copy(position, label)
            self._record(Given(position, label, written))
        self._after_change()
        return written

    def skip(self, position: int) -> None:
        with self._lock:
            self._check_open(position)
            self._record(Given(position, "", None))
        self._after_change()

    def undo(self) -> Given | None:
        """Take back the last label or skip: its copy is removed, the photo suggested again."""
        with self._lock:
            if not self._history:
                return None
            last = self._history.pop()
            del self._done[last.photo]
            if last.written is not None:
                last.written.unlink(missing_ok=True)
            self._cards.insert(0, Card(last.photo, last.label or None, "taken back"))
        self._after_change(refit=False)
        return last

    def wait(self) -> None:
        """Until the refits in the background have finished (for tests and a clean exit)."""
        self._refits_due.wait()

    # -- inside ------------------------------------------------------------------------------

    def _check_open(self, position: int) -> None:
        if position not in {card.photo for card in self._cards}:
            raise HeadstartError(f"photo {position} is not among the suggestions")

    def _record(self, given: Given) -> None:
        self._done[given.photo] = given
        self._history.append(given)
        self._cards = [card for card in self._cards if card.photo != given.photo]

    def _after_change(self, refit: bool = True) -> None:
        labels = sum(1 for given in self._history if given.written is not None)
        if refit and labels and labels % REFIT_EVERY == 0:
            self._refits_due.request()  # never blocks a request
        if len(self._cards) < SHOWN // 2:
            self._suggest()

    def _copy(self, position: int, label: str) -> Path:
        """The photo's bytes, written as a new file in DATASET/label/ (never over another)."""
        data = read_file(self.pool[position])
        if isinstance(data, str):
            raise HeadstartError(f"{self.pool[position]}: {data}")
        folder = self.dataset / label
        name = Path(str(self.pool[position]).rstrip("/").rsplit("/", 1)[-1]).name or "photo"
        target, number = folder / name, 1
        while target.exists():
            number += 1
            target = folder / f"{Path(name).stem}-{number}{Path(name).suffix}"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
        return target

    def _dataset_photos(self, width: int) -> Labelled:
        """The photos already in DATASET's class folders: features (`width` wide when there
        are none), labels and digests."""
        paths: list[ImagePath] = []
        labels: list[int] = []
        for index, label in enumerate(self.classes):
            folder = self.dataset / label
            found = visible_images(folder) if folder.is_dir() else []
            paths += found
            labels += [index] * len(found)
        if not paths:
            return Labelled(np.zeros((0, width), np.float32), np.zeros(0, np.int64), [], [])
        result = self.extractor.extract_files(paths, False, "Labelled")
        y = np.asarray(labels, np.int64)[result.kept]
        return Labelled(result.features.astype(np.float32), y, result.digests, self.classes)

    def _all_x(self) -> np.ndarray:
        rows = [self._row(given.photo) for given in self._history if given.written]
        return np.concatenate([self._x, self.features[rows]]) if rows else self._x

    def _all_y(self) -> np.ndarray:
        new = [self.classes.index(given.label) for given in self._history if given.written]
        return np.concatenate([self._y, np.asarray(new, np.int64)]) if new else self._y

    def _row(self, position: int) -> int:
        return self.kept.index(position)

    def _refit(self) -> None:
        """A head on the labelled photos (probabilities for the pool) and its cross-validated
        accuracy; both replace the old ones at once."""
        with self._lock:
            x, y = self._all_x(), self._all_y()
        probabilities = accuracy = None
        if len(np.unique(y)) >= 2:
            probabilities = head_probabilities(x, y, self.features, len(self.classes))
            accuracy = cross_validated_accuracy(x, y, len(self.classes))
        with self._lock:
            self._probabilities, self._accuracy = probabilities, accuracy
            self._refits += 1
            self._relabel()

    def _relabel(self) -> None:
        """Each shown card's suggested label from the newest head."""
        if self._probabilities is None:
            return
        for card in self._cards:
            best = int(np.argmax(self._probabilities[self._row(card.photo)]))
            card.suggested = self.classes[best]

    def _suggest(self) -> None:
        with self._lock:
            shown = {card.photo for card in self._cards}
            open_rows = [
                row
                for row, position in enumerate(self.kept)
                if position not in self._done and position not in shown
            ]
            if not open_rows:
                return
            picks = self._picks(open_rows, SHOWN - len(self._cards))
            for row, reason in picks:
                self._cards.append(Card(self.kept[row], None, reason))
            self._relabel()

    def _picks(self, open_rows: Sequence[int], count: int) -> list[tuple[int, str]]:
        """Rows of the pool to show next: the default strategy over the open photos, with
        the labelled ones (the dataset's and this session's) as covered."""
        x_open = self.features[open_rows]
        labelled_x, labelled_y = self._all_x(), self._all_y()
        z = (
            embedded(np.concatenate([x_open, labelled_x]), self.seed)
            if len(x_open) + len(labelled_x) > 2
            else np.concatenate([x_open, labelled_x])
        )
        mask = np.zeros(len(z), bool)
        mask[len(x_open) :] = True
        x = np.concatenate([x_open, labelled_x])
        y = np.concatenate([np.zeros(len(x_open), np.int64), labelled_y])
        count = min(count, len(open_rows))
        picks = default_picks(z, x, y, mask, len(self.classes), count, self.seed)
        return [(open_rows[pick.index], pick.reason) for pick in picks]


def cross_validated_accuracy(x: np.ndarray, y: np.ndarray, classes: int) -> float | None:
    """Accuracy of a linear head over stratified folds of the labelled photos; None until
    every labelled class has at least 2 photos."""
    predicted = out_of_fold_predictions(x, y, classes)
    return None if predicted is None else float((predicted == y).mean())


def out_of_fold_predictions(x: np.ndarray, y: np.ndarray, classes: int) -> np.ndarray | None:
    """Each photo's label from a linear head fitted on the folds it is not in (stratified,
    2 to 5 folds); None until every labelled class has at least 2 photos."""
    counts = np.bincount(y, minlength=classes)
    present = counts[counts > 0]
    if len(present) < 2 or present.min() < 2:
        return None
    labels = np.flatnonzero(counts)  # the folds deal only the classes labelled so far
    folds = stratified_folds(np.searchsorted(labels, y), len(labels))
    predicted = np.empty(len(y), np.int64)
    for fold in np.unique(folds):
        held = folds == fold
        fit = fit_linear(x[~held], y[~held], x[:0], y[:0], classes, l2=DEFAULT_L2)
        predicted[held] = (x[held] @ fit.weight.T + fit.bias).argmax(1)
    return predicted


def session_classes(dataset: Path, given: Sequence[str], model_labels: Sequence[str]) -> list[str]:
    """The labels to offer: those given, else the dataset's class folders, else the model's."""
    if given:
        return list(dict.fromkeys(given))
    if dataset.is_dir():
        folders = sorted(
            p.name for p in dataset.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if folders:
            return folders
    return list(model_labels)


def check_pool_and_dataset(pool: Sequence[str], dataset: Path) -> None:
    """Refuse a dataset inside a pool folder (its copies would be suggested next time) and a
    pool inside the dataset (its photos are labelled already)."""
    target = Path(dataset).resolve()
    for source in pool:
        folder = Path(source)
        if not folder.is_dir():
            continue
        inside = folder.resolve()
        if target.is_relative_to(inside) or inside.is_relative_to(target):
            raise HeadstartError(
                f"{dataset}: the dataset and the pool folder {source} must not hold each other"
            )


def folder_names_problem(labels: Sequence[str]) -> str | None:
    """Why a label cannot name a class folder of its own, or None: a label becomes
    DATASET/LABEL/, so it must stay one visible folder inside DATASET."""
    for label in labels:
        if label.startswith(".") or any(c in label for c in "/\\:\x00") or len(label) > 255:
            return f"the label {label!r} cannot name a class folder (no /, \\, :, leading .)"
    return None
