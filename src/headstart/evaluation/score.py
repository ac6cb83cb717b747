"""Scoring a trained classifier on labelled photos: which photos, their probabilities, and the
metrics. The model predicts; judging it belongs here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headstart.data.sources import Dataset
from headstart.evaluation.metrics import Evaluation, evaluate_probabilities
from headstart.evaluation.multilabel import MultiLabelEvaluation, evaluate_multi_label
from headstart.model.classifier import Classifier
from headstart.model.scoring import EvaluationSet


@dataclass
class Scored:
    """What one evaluation scored: the photos, their calibrated probabilities, the metrics."""

    photos: EvaluationSet
    probabilities: np.ndarray
    evaluation: Evaluation | MultiLabelEvaluation


def evaluate(
    classifier: Classifier,
    data: str | Path | Dataset,
    split: str | None = None,
    *,
    tta: bool = False,
    keep_duplicates: bool = False,
) -> Evaluation | MultiLabelEvaluation:
    """Evaluate `classifier` on `data`: its held-out split (test, else validation) if it is the
    dataset the model was trained on, else every image in it; or the named `split`.

    Images identical to a training image are left out unless `keep_duplicates`; the
    Evaluation's `scope` says what was scored. `tta` averages the probabilities over flips
    and crops (test-time augmentation). A multi-label model gets a MultiLabelEvaluation
    (mAP, F1s, exact-set accuracy, per-label results at its thresholds).
    """
    return score(classifier, data, split, tta=tta, keep_duplicates=keep_duplicates).evaluation


def score(
    classifier: Classifier,
    data: str | Path | Dataset,
    split: str | None = None,
    *,
    tta: bool = False,
    keep_duplicates: bool = False,
) -> Scored:
    """`evaluate`, also handing back what was scored (the report draws on it)."""
    photos = classifier.evaluation_set(data, split, keep_duplicates=keep_duplicates)
    labelled = photos.labelled
    probabilities = classifier.scored_probabilities(labelled, tta)
    evaluation: Evaluation | MultiLabelEvaluation
    if classifier.multi_label:
        evaluation = evaluate_multi_label(
            probabilities,
            labelled.y,
            classifier.labels,
            classifier.thresholds,
            photos.split,
            labelled.skipped,
        )
    else:
        evaluation = evaluate_probabilities(
            probabilities, labelled.y, classifier.labels, photos.split, labelled.skipped
        )
    evaluation.scope = photos.describe()
    evaluation.duplicates = [str(path) for path in photos.duplicates]
    return Scored(photos, probabilities, evaluation)
