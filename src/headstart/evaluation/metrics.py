"""Top-1/top-5 accuracy, per-class precision and recall, confusion matrix and cross entropy."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from headstart.data.locations import ImagePath


@dataclass
class Evaluation:
    split: str
    labels: list[str]
    images: int
    accuracy: float
    top5_accuracy: float | None  # only when there are more than five classes
    cross_entropy: float
    per_class: list[dict[str, Any]]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    skipped: list[tuple[str, str]] = field(default_factory=list)
    scope: str = ""  # which images were scored, in words
    duplicates: list[str] = field(default_factory=list)  # identical to training images

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_probabilities(
    probabilities: np.ndarray,
    truth: np.ndarray,
    labels: list[str],
    split: str = "test",
    skipped: list[tuple[ImagePath, str]] | None = None,
) -> Evaluation:
    from sklearn.metrics import (
        confusion_matrix,
        log_loss,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    classes = list(range(len(labels)))
    predicted = probabilities.argmax(axis=1)
    # A class never predicted has no precision, one never present no recall: undefined (None),
    # not 0.0, which would read as "always wrong".
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=classes, zero_division=np.nan
    )
    per_class = [
        {
            "label": label,
            "precision": _defined(precision[i]),
            "recall": _defined(recall[i]),
            "f1": _defined(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    ]
    top5 = None
    if len(labels) > 5:
        top5 = float(top_k_accuracy_score(truth, probabilities, k=5, labels=classes))
    return Evaluation(
        split=split,
        labels=list(labels),
        images=len(truth),
        accuracy=float(np.mean(predicted == truth)),
        top5_accuracy=top5,
        cross_entropy=float(log_loss(truth, probabilities, labels=classes)),
        per_class=per_class,
        confusion=confusion_matrix(truth, predicted, labels=classes).tolist(),
        skipped=[(str(path), reason) for path, reason in (skipped or [])],
    )


def _defined(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
