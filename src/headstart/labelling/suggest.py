"""headstart's default way to pick photos to label: typical ones while few are labelled,
then the least sure ones spread over clusters (strategies.py says what each is)."""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headstart.backbones.registry import preset_backbone, resolve_backbone
from headstart.context import RunContext
from headstart.data.images import typical_short_side
from headstart.data.locations import ImagePath
from headstart.data.sources import Dataset, load_dataset
from headstart.doctor.duplicates import FEATURE_RATIO, exact_groups, near_groups
from headstart.doctor.neighbours import unit_rows
from headstart.errors import HeadstartError
from headstart.features.extract import FeatureExtractor
from headstart.features.labelled import labelled_features
from headstart.features.store import open_feature_cache
from headstart.labelling.strategies import Pick, embedded, margin_over_clusters, typical
from headstart.model.classifier import Classifier
from headstart.model.prediction import image_list
from headstart.storage import SafeCsvWriter, atomic_write_text, check_writable_file
from headstart.training.solver import DEFAULT_L2, fit_linear

# Below this many labelled photos (a class, and in all), a head's uncertainty says little:
# typical photos cover the data better. bench/active.py measured 3, 5 and 10 a class: 5 was
# best on digits and flowers5, and typical photos led or tied up to 30 labels everywhere.
SWITCH_PER_CLASS = 5
SWITCH_AT_LEAST = 30


def enough_for_margin(labelled: int, classes: int) -> bool:
    """Whether so many labelled photos make a head's doubts the better guide."""
    return labelled >= max(SWITCH_PER_CLASS * classes, SWITCH_AT_LEAST)


def default_picks(
    z: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    labelled: np.ndarray,
    classes: int,
    count: int,
    seed: int = 0,
) -> list[Pick]:
    """`count` photos to label next among the rows of `labelled` that are False. `z`: the
    embeddings (strategies.embedded), `x`: the features, `y`: labels (read where labelled)."""
    known = y[labelled]
    if not enough_for_margin(len(known), classes) or len(np.unique(known)) < 2:
        return typical(z, labelled, count, seed)
    probabilities = head_probabilities(x[labelled], known, x, classes)
    return margin_over_clusters(z, probabilities, ~labelled, count, seed)


def head_probabilities(
    train_x: np.ndarray, train_y: np.ndarray, x: np.ndarray, classes: int
) -> np.ndarray:
    """A linear head fitted on the labelled photos: probabilities. One solve at the strength
    `train` uses without validation photos, so a refit takes a fraction of a second (choosing
    it by cross-validation took seconds at 200 photos)."""
    from scipy.special import softmax

    fit = fit_linear(train_x, train_y, train_x[:0], train_y[:0], classes, l2=DEFAULT_L2)
    return softmax(x @ fit.weight.T + fit.bias, axis=1)


@dataclass(frozen=True)
class Suggestion:
    """A photo to label next: its rank (1 first), the label a head predicts for it (None
    without a head), the strategy's score and why it was picked."""

    path: ImagePath
    rank: int
    suggested: str | None
    score: float
    reason: str
    unknown: bool = False  # unlike every class the model knows


@dataclass
class Suggestions:
    rows: list[Suggestion]
    strategy: str  # "typical" or "margin over clusters"
    pool: int  # photos in the pool
    skipped: list[tuple[ImagePath, str]] = field(default_factory=list)  # unreadable
    already_labelled: int = 0  # pool photos whose content is a labelled photo's
    duplicates: int = 0  # near-duplicates of a labelled photo or of another pool photo


@dataclass
class Labelled:
    """The photos labelled so far: features, label indices and content digests."""

    x: np.ndarray
    y: np.ndarray
    digests: list[bytes]
    classes: list[str]


def suggest(
    pool: str | ImagePath | Iterable[str | ImagePath],
    count: int = 20,
    model: Classifier | None = None,
    labelled: str | Path | Dataset | None = None,
    context: RunContext | None = None,
    seed: int = 0,
) -> Suggestions:
    """The `count` photos of `pool` (files, folders, URIs or a manifest) to label next,
    best first, from cached features. `labelled`: the dataset labelled so far (its photos
    are never suggested, nor near-duplicates of them); `model`: a trained model whose
    predictions rank the pool (else a head is fitted on `labelled` when it holds enough)."""
    if count < 1:
        raise HeadstartError(f"count must be at least 1, not {count}")
    if model is not None:
        model.require_single_label("suggest")
    context = context or (model.context if model is not None else RunContext())
    paths = image_list(pool)
    extractor = model.extractor() if model is not None else default_extractor(paths, context)
    known = _labelled(extractor, labelled, model, context.progress)
    result = extractor.extract_files(paths, context.progress, "Pool")
    width = extractor.backbone.distance_features
    candidates, already, copies = unlabelled(result, known, width)
    every = result.features[candidates]
    kept_paths = [paths[result.kept[i]] for i in candidates]
    predicted = model.probabilities(every) if model is not None and len(every) else None
    picks, strategy, probabilities = _ranked(
        leading(every, width), known, predicted, _trained_photos(model), count, seed
    )
    unknown = _unknown_flags(model, every)
    rows = [
        _suggestion(rank, pick, kept_paths, probabilities, known, unknown)
        for rank, pick in enumerate(picks, start=1)
    ]
    return Suggestions(rows, strategy, len(paths), result.skipped, already, copies)


def default_extractor(paths: list[ImagePath], context: RunContext) -> FeatureExtractor:
    """The default backbone's extractor, as `train` would choose it for these photos."""
    cache = open_feature_cache(context)
    name, size = preset_backbone(None, None, None)
    side = typical_short_side(paths) if size is None else None
    backbone = resolve_backbone(name, cache.workspace.root, size, image_side=side)
    return FeatureExtractor(backbone, cache, context.engine, runner=context.cluster)


def _labelled(extractor, labelled, model, progress: bool) -> Labelled:
    if labelled is None:
        classes = model.labels if model is not None else []
        digests = []
        if model is not None:
            digests = [bytes(row) for row in model.training_digests.get("train", [])]
        width = extractor.backbone.width or 0
        return Labelled(np.zeros((0, width), np.float32), np.zeros(0, np.int64), digests, classes)
    dataset = labelled if isinstance(labelled, Dataset) else load_dataset(labelled)
    if dataset.multi_label:
        raise HeadstartError(f"{dataset.root}: suggest takes single-label data, not label sets")
    features = labelled_features(extractor, dataset.samples, dataset.classes, progress, "Labelled")
    return Labelled(features.x, features.y, features.digests, dataset.classes)


def leading(features: np.ndarray, width: int | None) -> np.ndarray:
    """The pooled head's features (what a photo shows): with a few labels, a head on them
    beats one on the stage features too (measured on tests/data: 91% against 85% at 10)."""
    return np.asarray(features[:, :width], np.float32)


def unlabelled(result, known: Labelled, width: int | None) -> tuple[list[int], int, int]:
    """Positions (in result's kept rows) of pool photos worth suggesting: not a labelled
    photo's content, not a near-duplicate of one, one photo of each group of copies."""
    labelled_digests = set(known.digests)
    fresh = [i for i, digest in enumerate(result.digests) if digest not in labelled_digests]
    already = len(result.digests) - len(fresh)
    if not fresh:
        return [], already, 0
    # A model's training photos are known by digest alone: no features to compare.
    rows = known.digests if len(known.digests) == len(known.x) else []
    known_x = leading(known.x, width)[: len(rows)]
    x = np.concatenate([known_x, leading(result.features[fresh], width)])
    digests = [bytes(d) for d in rows] + [result.digests[i] for i in fresh]
    unit = unit_rows(x, x.mean(axis=0))
    groups, _, _ = near_groups([(unit, FEATURE_RATIO)], digests)
    dropped = set()
    for group in [*groups, *exact_groups(digests)]:
        members = sorted(group)
        keep_first = members[0] >= len(rows)  # no labelled photo in the group
        dropped |= set(members[1:] if keep_first else members)
    kept = [fresh[i - len(rows)] for i in range(len(rows), len(x)) if i not in dropped]
    return kept, already, len(fresh) - len(kept)


def _ranked(x, known: Labelled, predicted, trained_on: int, count: int, seed: int):
    """Picks (indices into x), the strategy's name, and the pool's probabilities (a model's
    `predicted`, else a head's fitted on the labelled photos when they are enough, or None)."""
    if not len(x):
        return [], "none left", None
    labelled_x = leading(known.x, x.shape[1])
    z = embedded(np.concatenate([x, labelled_x]), seed)
    labelled = np.zeros(len(z), bool)
    labelled[len(x) :] = True
    classes = len(known.classes)
    probabilities = predicted
    if probabilities is None and len(np.unique(known.y)) >= 2:  # a guess for each photo
        probabilities = head_probabilities(labelled_x, known.y, x, classes)
    trained_on = len(known.y) or trained_on
    if probabilities is None or not enough_for_margin(trained_on, max(classes, 1)):
        return typical(z, labelled, min(count, len(x)), seed), "typical", probabilities
    every = np.zeros((len(z), probabilities.shape[1]), np.float32)
    every[: len(x)] = probabilities
    picks = margin_over_clusters(z, every, ~labelled, min(count, len(x)), seed)
    return picks, "margin over clusters", probabilities


def _trained_photos(model) -> int:
    summary = model.summary if model is not None else None
    return int(summary.used.get("train", 0) + summary.used.get("val", 0)) if summary else 0


def _unknown_flags(model, x: np.ndarray) -> np.ndarray:
    scores = model.unknown_scores(x) if model is not None and len(x) else None
    if scores is None or model.unknown is None:
        return np.zeros(len(x), bool)
    return model.unknown.flags(scores)


def _suggestion(rank, pick, paths, probabilities, known: Labelled, unknown) -> Suggestion:
    suggested = None
    if probabilities is not None:
        suggested = known.classes[int(np.argmax(probabilities[pick.index]))]
    reason = pick.reason + ("; unlike every class the model knows" if unknown[pick.index] else "")
    return Suggestion(
        paths[pick.index], rank, suggested, pick.score, reason, bool(unknown[pick.index])
    )


CSV_COLUMNS = ("path", "rank", "suggested", "score", "reason")


def check_suggestions_file(path: Path) -> None:
    """Fail before any work when the CSV cannot be written."""
    if Path(path).suffix.lower() != ".csv":
        raise HeadstartError(f"{path}: suggestions are written as a .csv file")
    check_writable_file(Path(path), "suggestions file")


def write_suggestions(suggestions: Suggestions, path: Path) -> None:
    """path,rank,suggested,score,reason: one row a photo, best first, written atomically."""
    buffer = io.StringIO()
    writer = SafeCsvWriter(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in suggestions.rows:
        writer.writerow(
            [str(row.path), row.rank, row.suggested or "", f"{row.score:.6g}", row.reason]
        )
    atomic_write_text(Path(path), buffer.getvalue())
