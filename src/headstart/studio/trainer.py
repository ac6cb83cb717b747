"""The studio's model: `headstart train` on the project, again in the background after every
change (the linear head on cached features: a fraction of a second once a photo's features
are in the cache), with a cross-validated accuracy and confusion matrix beside it.

A request never waits for training: predictions use the newest finished model, and a change
made while a training runs is trained on right after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from headstart.context import RunContext
from headstart.errors import HeadstartError
from headstart.labelling.session import out_of_fold_predictions
from headstart.labelling.suggest import leading
from headstart.model.heads import Head
from headstart.studio.project import Project
from headstart.threads import Rerun
from headstart.training.choice import FOLDS
from headstart.training.settings import FitSettings, Strategy
from headstart.training.solver import DEFAULT_L2, fit_linear

if TYPE_CHECKING:
    from headstart.model.classifier import Classifier

MIN_PHOTOS = 2  # a class, before the first training (cross-validation needs 2 as well)


@dataclass(frozen=True)
class ModelState:
    """What the page shows of the model."""

    version: int  # trainings finished so far
    current: bool  # trained on the project as it is now
    training: bool
    labels: list[str]
    photos: int  # that the newest model trained on
    accuracy: float | None  # cross-validated, linear head on the pooled features
    folds: int | None
    confusion: list[list[int]] | None  # rows: true label, columns: predicted, as `labels`
    seconds: float | None  # the newest training's, features included
    message: str | None  # why there is no model yet, or why the last training failed
    head_only: bool = False  # the head refitted on every photo; the full training follows


@dataclass
class Answer:
    """One photo's prediction."""

    ranked: list[tuple[str, float]]
    unknown: bool | None
    unknown_score: float | None
    heatmap_png: str | None = None


@dataclass
class Trainer:
    """`train` is headstart.train, handed down by the layer above (the CLI), which the stages
    below it do not import."""

    project: Project
    train: Callable
    settings: FitSettings = field(
        default_factory=lambda: FitSettings(seed=0, strategy=Strategy.LINEAR)
    )
    _classifier: Classifier | None = field(init=False, default=None)
    _state: ModelState = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _trained_changes: int = field(init=False, default=-1)
    _trainings: Rerun = field(init=False)
    _settled: threading.Condition = field(init=False)  # notified when a training ends

    def __post_init__(self) -> None:
        self.context = RunContext(cache_dir=self.project.cache)
        self._state = ModelState(0, False, False, [], 0, None, None, None, None, None)
        self._trainings = Rerun(self._train_once_safely)
        self._settled = threading.Condition(self._lock)

    # -- what the API reads ------------------------------------------------------------------

    def state(self) -> ModelState:
        training = self._trainings.busy
        with self._lock:
            current = self._is_current()
            return replace(self._state, current=current, training=training)

    def classifier(self) -> Classifier:
        """The newest model in use, or HeadstartError saying why there is none."""
        with self._lock:
            if self._classifier is None:
                raise HeadstartError(self._state.message or "no model yet: add photos")
            return self._classifier

    def predict(self, data: bytes, explain: bool = False, max_pixels: int | None = None) -> Answer:
        """The newest model's answer for one photo's bytes; ValueError when it does not
        decode. Its features are not cached: a webcam frame is seen once."""
        classifier = self.classifier()
        batch = classifier.extractor().extract_batch([data])
        if not batch.indices:
            raise ValueError(batch.errors.get(0, "not a readable image"))
        probabilities = classifier.probabilities(batch.features)[0]
        order = np.argsort(-probabilities)
        ranked = [(classifier.labels[i], float(probabilities[i])) for i in order]
        answer = Answer(ranked, None, None)
        unknown, scores = classifier.unknown, classifier.unknown_scores(batch.features)
        if unknown is not None and scores is not None:
            answer.unknown_score, answer.unknown = float(scores[0]), bool(unknown.flags(scores)[0])
        if explain:
            answer.heatmap_png = _heat_map(classifier, data, max_pixels)
        return answer

    # -- what changes it ---------------------------------------------------------------------

    def changed(self) -> None:
        """The project changed: train again in the background (after the running one)."""
        self._trainings.request()

    def wait(self, timeout: float = 120.0) -> bool:
        """Until the newest model (or the reason there is none) is for the project as it is
        now; False on timeout. Its cross-validated accuracy may follow a moment later."""
        with self._settled:
            return self._settled.wait_for(self._is_current, timeout)

    def wait_idle(self, timeout: float = 120.0) -> bool:
        """Until no training runs or is due (the cross-validation after one included): for a
        clean exit; False on timeout."""
        return self._trainings.wait(timeout)

    # -- inside ------------------------------------------------------------------------------

    def _is_current(self) -> bool:
        return self._trained_changes == self.project.changes

    def _train_once_safely(self) -> None:
        try:
            self._train_once()
        except Exception as error:  # a worker that died would leave the page waiting
            self._settle(self.project.changes, message=f"training failed: {error}")

    def _train_once(self) -> None:
        changes = self.project.changes
        counts = self.project.counts()
        short = [label for label, count in counts.items() if count < MIN_PHOTOS]
        if len(counts) < 2 or short:
            self._settle(changes, message=_waiting(counts, short))
            return
        self._refit_head(changes)
        started = time.perf_counter()
        try:
            classifier = self.train(
                self.project.photos,
                self.project.model,
                settings=self.settings,
                context=self.context,
            )
        except HeadstartError as error:
            self._settle(changes, message=f"training failed: {error}")
            return
        seconds = time.perf_counter() - started
        photos = sum(classifier.summary.used.values()) if classifier.summary else 0
        with self._lock:  # predictions use it from now on; its accuracy follows
            self._classifier = classifier
            self._state = ModelState(
                self._state.version + 1, True, True, list(classifier.labels), photos,
                None, None, None, seconds, None,
            )  # fmt: skip
            self._trained_changes = changes
            self._settled.notify_all()
        accuracy, folds, confusion = self._cross_validated(classifier)
        with self._lock:
            if self._classifier is classifier:
                self._state = replace(
                    self._state, accuracy=accuracy, folds=folds, confusion=confusion
                )

    def _refit_head(self, changes: int) -> None:
        """The newest model's head fitted again on every photo, with the features and L2 its
        training chose, put in use at once: the new photos count within a second, and the
        full training (which chooses again and calibrates) replaces it a moment later."""
        with self._lock:
            previous = self._classifier
        if (
            previous is None
            or previous.head.config.kind != "linear"
            or list(previous.labels) != self.project.classes()
        ):
            return
        started = time.perf_counter()
        features, y = self._features(previous)
        weight = previous.head.parameters["1.weight"]
        columns = np.flatnonzero(np.abs(weight).sum(axis=0) > 0)  # the chosen feature set
        x = features[:, columns]
        l2 = previous.summary.l2 if previous.summary and previous.summary.l2 else DEFAULT_L2
        fit = fit_linear(x, y, x[:0], y[:0], len(previous.labels), l2=l2)
        refitted = np.zeros_like(weight)
        refitted[:, columns] = fit.weight
        head = Head(previous.head.config, {"1.weight": refitted, "1.bias": fit.bias})
        seconds = time.perf_counter() - started
        with self._lock:
            self._classifier = previous.with_head(head)
            self._state = replace(
                self._state, version=self._state.version + 1, photos=len(y), seconds=seconds,
                accuracy=None, folds=None, confusion=None, message=None, head_only=True,
            )  # fmt: skip
            self._trained_changes = changes
            self._settled.notify_all()

    def _settle(self, changes: int, message: str) -> None:
        with self._lock:
            self._state = replace(self._state, message=message)
            self._trained_changes = changes
            self._settled.notify_all()

    def _features(self, classifier: Classifier) -> tuple[np.ndarray, np.ndarray]:
        """Every readable project photo's features (cached) and its label's index."""
        photos = self.project.labelled_photos()
        result = classifier.extractor().extract_files([p for p, _ in photos], False, "Studio")
        labels = list(classifier.labels)
        y = np.asarray([labels.index(photos[i][1]) for i in result.kept], np.int64)
        return result.features, y

    def _cross_validated(
        self, classifier: Classifier
    ) -> tuple[float | None, int | None, list | None]:
        """Accuracy and confusion matrix of a linear head over stratified folds of every
        project photo (the pooled features train cached)."""
        features, y = self._features(classifier)
        labels = list(classifier.labels)
        x = leading(features, classifier.extractor().backbone.distance_features)
        predicted = out_of_fold_predictions(x, y, len(labels))
        if predicted is None:
            return None, None, None
        confusion = np.zeros((len(labels), len(labels)), np.int64)
        np.add.at(confusion, (y, predicted), 1)
        folds = int(min(FOLDS, np.bincount(y, minlength=len(labels)).min()))
        return float((predicted == y).mean()), folds, confusion.tolist()


def _waiting(counts: dict[str, int], short: list[str]) -> str:
    if len(counts) < 2:
        return "make at least 2 classes"
    return f"add at least {MIN_PHOTOS} photos to: {', '.join(short)}"


def _heat_map(classifier, data: bytes, max_pixels: int | None) -> str | None:
    """The photo with its top label's heat map over it (base64 PNG); None where the model has
    no maps (a backbone without feature maps)."""
    from headstart.serving.app import overlays

    pixels = classifier.preprocessing.pixels(data, max_pixels)
    try:
        probabilities, maps = classifier.explain_pixels(pixels[None].copy())
    except HeadstartError:
        return None
    return overlays(classifier, [("photo", data)], probabilities, maps, max_pixels)[0]
