"""Choices that hold on small data: when the validation split is too small to tell options
apart (a few dozen photos: one photo moves its accuracy by several points), the linear head's
L2 strength and its features (every pooled stage, the last layer alone, or the backbone's own
ImageNet classifier's log-probabilities, alone or beside the last layer) are chosen by
stratified k-fold cross-validation over the training and validation photos together. The
linear head solves in a fraction of a second, so k folds cost little; every photo then scores
each option once, out of fold, and the simpler option stays unless the other wins by more
than the folds' spread.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from headstart.features.blocks import column_mean
from headstart.features.labelled import class_counts
from headstart.threads import cpu_threads
from headstart.training.solver import (
    L2_PATH,
    LinearProblem,
    SigmoidProblem,
    scipy_blas_single_threaded,
)
from headstart.training.strategy import MIN_VAL_IMAGES

# Below this many validation images a choice is made by cross-validation: where `auto` also
# stops judging fine-tuning on validation, so a head fitted on both is never fine-tuned next.
SMALL_VALIDATION = MIN_VAL_IMAGES
FOLDS = 5
# The folds only rank strengths: solved to 1e-4, they chose what 1e-6 chose (flowers5, 6
# draws of 25 and 100 photos a class) in 2 to 3 times less time.
FOLD_GTOL = 1e-4


@dataclass(frozen=True)
class FeatureSet:
    """Columns a head may read, and what they are, in words for the summary."""

    name: str
    columns: np.ndarray

    def of(self, x: np.ndarray) -> np.ndarray:
        """Those columns of x: a view where they lead (the solver then sees exactly the
        matrix it saw before sets other than leading ones existed), else a copy."""
        count = len(self.columns)
        if np.array_equal(self.columns, np.arange(count)):
            return x[:, :count]
        return x[:, self.columns]


@dataclass
class CrossValidated:
    """What the folds chose, and the out-of-fold logits of every photo under that choice."""

    l2: float
    chosen: FeatureSet  # the columns the head uses
    out_of_fold: np.ndarray  # (photos, classes) float32: each from a head that never saw it
    folds: int
    photos: int
    accuracy: float  # out-of-fold accuracy of the choice (of label decisions, for label sets)
    measure: str = "accuracy"

    def describe(self) -> str:
        return (
            f"{self.folds}-fold cross-validation over the {self.photos} training and validation "
            f"photos chose L2 {self.l2:g} and {self.chosen.name} (out-of-fold {self.measure} "
            f"{self.accuracy:.1%})"
        )


def can_cross_validate(y: np.ndarray, num_classes: int) -> bool:
    """Every class needs 2 photos, one per side of some fold."""
    return bool(class_counts(y, num_classes).min() >= 2)


def _strata(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Each photo's class; of a multi-label photo, its rarest label (`num_classes` for none),
    so that folds deal every label out as evenly as they can."""
    if y.ndim == 1:
        return y
    counts = y.sum(axis=0)
    rarity = np.where(y > 0.5, counts, np.inf)
    return np.where(np.isinf(rarity.min(axis=1)), num_classes, rarity.argmin(axis=1))


def leading(widths: tuple[int, ...], total: int) -> tuple[FeatureSet, ...]:
    """The first `w` features for each width, narrowest first, and every feature last."""
    narrower = sorted({w for w in widths if w < total})
    sets = [FeatureSet(f"the first {w} of {total} features", np.arange(w)) for w in narrower]
    return (*sets, FeatureSet("every feature", np.arange(total)))


def cross_validated_choice(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    candidates: tuple[FeatureSet, ...],
    *,
    label_smoothing: float = 0.0,
    sample_weight: np.ndarray | None = None,
) -> CrossValidated:
    """The (feature set, L2) with the lowest mean out-of-fold loss; `candidates` go simplest
    first, and one is kept unless a later one's loss is lower by more than the standard error
    of their per-fold differences."""
    folds = stratified_folds(y, num_classes)
    count = int(folds.max()) + 1
    kind = SigmoidProblem if y.ndim == 2 else LinearProblem
    # losses[i]: (folds, strengths); logits[i]: (strengths, photos, classes)
    paths = [
        _path_by_fold(kind, c.of(x), y, folds, num_classes, label_smoothing, sample_weight)
        for c in candidates
    ]
    best = [int(np.argmin(losses.mean(axis=0))) for losses, _ in paths]
    chosen = 0
    for other in range(1, len(candidates)):
        difference = paths[chosen][0][:, best[chosen]] - paths[other][0][:, best[other]]
        if difference.mean() > difference.std(ddof=1) / np.sqrt(count):
            chosen = other
    out_of_fold = paths[chosen][1][best[chosen]]
    accuracy = kind.scores(out_of_fold, y)[1]
    l2 = L2_PATH[best[chosen]]
    measure = "accuracy of label decisions" if y.ndim == 2 else "accuracy"
    return CrossValidated(l2, candidates[chosen], out_of_fold, count, len(y), accuracy, measure)


def stratified_folds(y: np.ndarray, num_classes: int, seed: int = 0) -> np.ndarray:
    """A fold number per photo: each class dealt round-robin, in a seeded shuffle, so every
    fold holds each class in proportion; as many folds as the rarest class allows (2 to 5),
    or for label sets (a 0/1 matrix) 5."""
    # A multi-label photo's rarest label deals it; a label of 2 photos then has one on each
    # side of 2 of the folds, whatever their number, so it does not cut them to 2.
    rarest = len(y) if y.ndim == 2 else class_counts(y, num_classes).min()
    count = int(min(FOLDS, rarest))
    strata = _strata(y, num_classes)
    order = np.random.default_rng(seed).permutation(len(y))
    folds = np.empty(len(y), np.int64)
    for label in range(num_classes + 1):
        members = order[strata[order] == label]
        folds[members] = np.arange(len(members)) % count
    return folds


def _path_by_fold(kind, x, y, folds, num_classes, label_smoothing, sample_weight):
    """Held-out losses (folds, strengths) and logits (strengths, photos, classes), the folds
    solved side by side on the usable cores. A fold's path stops once its held-out loss has
    risen twice in a row, as on validation; the strengths it skipped count as infinitely bad,
    so they are never chosen."""
    count = int(folds.max()) + 1
    losses = np.full((count, len(L2_PATH)), np.inf)
    logits = np.zeros((len(L2_PATH), len(y), num_classes), np.float32)

    def solve_fold(fold: int) -> None:
        train, held = folds != fold, folds == fold
        weights = sample_weight[train] if sample_weight is not None else None
        # float32 once: the solver would widen float16 rows again in every evaluation
        fold_x = x[train].astype(np.float32)
        problem = kind(fold_x, y[train], num_classes, label_smoothing, weights, column_mean(fold_x))
        params, rises = problem.zeros(), 0
        for index, l2 in enumerate(L2_PATH):  # strongest first, each warm-starting the next
            params, _ = problem.solve(l2, params, gtol=FOLD_GTOL)
            fold_logits = problem.logits(x[held], params)
            logits[index, held] = fold_logits
            losses[fold, index] = problem.scores(fold_logits, y[held])[0]
            rises = rises + 1 if index and losses[fold, index] > losses[fold, index - 1] else 0
            if rises == 2:
                break

    # SciPy's BLAS set to one thread here, once: the folds' own settings then restore that one
    with scipy_blas_single_threaded(), ThreadPoolExecutor(min(count, cpu_threads())) as pool:
        list(pool.map(solve_fold, range(count)))  # each fold writes its own rows and cells
    return losses, logits
