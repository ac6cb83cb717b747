"""Multi-label scores: each label is its own yes/no question, so a photo's answer is the set of
labels whose probability passes that label's threshold.

Ranking quality is mAP (the mean over labels of average precision, scikit-learn's), which no
threshold affects; the set's quality is per-label precision, recall and F1, micro and macro
F1, exact-set accuracy and Hamming loss at the model's thresholds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from headstart.data.locations import ImagePath

DEFAULT_THRESHOLD = 0.5
MIN_POSITIVES = 2  # fewer, and a threshold fitted to them is one photo's accident


def f1_thresholds(probabilities: np.ndarray, truth: np.ndarray) -> tuple[float, ...]:
    """A threshold a label maximising its F1 on these photos: halfway between the lowest
    probability it accepts and the next below, so a photo scored like one it accepted is
    accepted too. DEFAULT_THRESHOLD for a label with fewer than MIN_POSITIVES positives."""
    return tuple(
        _best_f1_threshold(probabilities[:, k], truth[:, k] > 0.5)
        for k in range(probabilities.shape[1])
    )


def _best_f1_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    if positive.sum() < MIN_POSITIVES:
        return DEFAULT_THRESHOLD
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], positive[order]
    true_positives = np.cumsum(hits)
    f1 = 2 * true_positives / (np.arange(1, len(ranked) + 1) + positive.sum())
    # only where the score drops may a threshold fall between accepted and rejected
    distinct = np.r_[ranked[1:] < ranked[:-1], True]
    best = int(np.argmax(np.where(distinct, f1, -1.0)))
    below = ranked[best + 1] if best + 1 < len(ranked) else 0.0
    return float(np.clip((ranked[best] + below) / 2, 1e-6, 1 - 1e-6))


def mean_average_precision(scores: np.ndarray, truth: np.ndarray) -> float | None:
    """Mean over the labels that have a positive here of their average precision."""
    aps = [ap for ap in average_precisions(scores, truth) if ap is not None]
    return float(np.mean(aps)) if aps else None


def average_precisions(scores: np.ndarray, truth: np.ndarray) -> list[float | None]:
    """Each label's average precision; None for a label no photo here shows."""
    from sklearn.metrics import average_precision_score

    return [
        float(average_precision_score(truth[:, k] > 0.5, scores[:, k]))
        if truth[:, k].any()
        else None
        for k in range(truth.shape[1])
    ]


@dataclass
class MultiLabelEvaluation:
    """A multi-label model's scores on a set of photos (`evaluate --json` writes them)."""

    split: str
    labels: list[str]
    images: int
    mAP: float | None  # the name everyone knows it by, as `evaluate --json` writes it
    micro_f1: float
    macro_f1: float | None
    exact_match: float  # the share of photos whose whole label set is right
    hamming_loss: float  # the share of (photo, label) decisions that are wrong
    label_cardinality: float  # labels a photo, true
    predicted_cardinality: float  # labels a photo, predicted
    per_label: list[dict[str, Any]]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    scope: str = ""
    duplicates: list[str] = field(default_factory=list)
    multi_label: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_multi_label(
    probabilities: np.ndarray,
    truth: np.ndarray,
    labels: list[str],
    thresholds: tuple[float, ...],
    split: str = "test",
    skipped: list[tuple[ImagePath, str]] | None = None,
) -> MultiLabelEvaluation:
    """Score calibrated probabilities (photos, labels) against 0/1 truth at `thresholds`."""
    return MultiLabelEvaluation(
        split=split,
        labels=list(labels),
        images=len(truth),
        **multi_label_metrics(probabilities, truth, labels, thresholds),
        skipped=[(str(path), reason) for path, reason in (skipped or [])],
    )


def multi_label_metrics(
    probabilities: np.ndarray,
    truth: np.ndarray,
    labels: list[str],
    thresholds: tuple[float, ...],
) -> dict[str, Any]:
    """The scores of a MultiLabelEvaluation, as plain JSON values."""
    from sklearn.metrics import f1_score, hamming_loss, precision_recall_fscore_support

    actual = truth > 0.5
    predicted = probabilities >= np.asarray(thresholds)[None, :]
    precision, recall, f1, support = precision_recall_fscore_support(
        actual, predicted, average=None, zero_division=0
    )
    aps = average_precisions(probabilities, truth)
    per_label = [
        {
            "label": label,
            "average_precision": aps[k],
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
            "predicted": int(predicted[:, k].sum()),
            "threshold": float(thresholds[k]),
        }
        for k, label in enumerate(labels)
    ]
    shown = actual.any(axis=0)  # macro F1 over the labels this data shows
    return {
        "mAP": mean_average_precision(probabilities, truth),
        "micro_f1": float(f1_score(actual, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1[shown].mean()) if shown.any() else None,
        "exact_match": float((actual == predicted).all(axis=1).mean()),
        "hamming_loss": float(hamming_loss(actual, predicted)),
        "label_cardinality": float(actual.sum(axis=1).mean()),
        "predicted_cardinality": float(predicted.sum(axis=1).mean()),
        "per_label": per_label,
    }


def worst_per_label(
    probabilities: np.ndarray, truth: np.ndarray, label: int, count: int
) -> list[tuple[int, str]]:
    """The photos a label is most wrong about: positives scored lowest and negatives scored
    highest, by how far from the truth, as (row, "missed" or "false alarm")."""
    error = np.abs(probabilities[:, label] - truth[:, label])
    order = np.argsort(-error, kind="stable")[:count]
    return [
        (int(row), "missed" if truth[row, label] > 0.5 else "false alarm")
        for row in order
        if error[row] > 0.5
    ]
