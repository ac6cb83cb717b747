"""The report of a multi-label model: the scores of evaluation/multilabel.py, each label's
precision-recall curve with its threshold, calibration over every (photo, label) decision,
and each label's worst mistakes as thumbnails (with that label's heat map)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from headstart.evaluation import figures
from headstart.evaluation.html import multi_label_page
from headstart.evaluation.multilabel import worst_per_label
from headstart.evaluation.report import calibration_numbers, gallery_pictures, write_rows_csv
from headstart.evaluation.score import Scored
from headstart.storage import SafeCsvWriter, atomic_write_bytes, atomic_write_text

WORST_PER_LABEL = 8
GALLERY_LABELS = 30  # the labels with the lowest AP get galleries: a report of 1,000 stays small


def write_multi_label_report(
    classifier, scored: Scored, folder: Path, heat_maps: bool
) -> tuple[dict[str, Any], Path]:
    """Write the report's files into `folder`; the numbers (metrics.json) and report.html."""
    labelled, calibrated = scored.photos.labelled, scored.probabilities
    truth = labelled.y
    raw = expit(classifier.logits(labelled.x).astype(np.float64))  # before the temperature
    numbers = _numbers(classifier, scored, raw, calibrated, truth)
    pngs = _figures(classifier, numbers, calibrated, truth)
    for name, data in pngs.items():
        atomic_write_bytes(folder / f"{name}.png", data)
    paths = [sample.path for sample in labelled.samples]
    write_rows_csv(folder / "per_label.csv", numbers["per_label"])
    _write_predictions_csv(folder / "predictions.csv", paths, truth, calibrated, classifier)
    shown = _weakest(numbers["per_label"], GALLERY_LABELS)
    galleries = _galleries(classifier, shown, paths, truth, calibrated, heat_maps)
    title = f"headstart report: {len(classifier.labels)} labels, multi-label"
    page = folder / "report.html"
    atomic_write_text(page, multi_label_page(title, numbers, pngs, galleries))
    return numbers, page


def _numbers(classifier, scored: Scored, raw, calibrated, truth) -> dict[str, Any]:
    summary, training = classifier.summary, classifier.training
    return {
        **scored.evaluation.to_dict(),
        "images_per_split": (summary and summary.used) or scored.photos.dataset.counts(),
        "backbone": classifier.backbone.to_dict(),
        "strategy": training.strategy if training else None,
        "training_seconds": summary.seconds.get("total") if summary else None,
        "train_per_class": dict(summary.train_per_class) if summary else {},
        "calibration": calibration_numbers(classifier, raw, calibrated, truth),
    }


def _figures(classifier, numbers, calibrated, truth) -> dict[str, bytes]:
    from sklearn.metrics import precision_recall_curve

    curves, operating = [], []
    for k, row in enumerate(numbers["per_label"]):
        if not truth[:, k].any():  # no positive here: no curve to draw
            continue
        precision, recall, _ = precision_recall_curve(truth[:, k] > 0.5, calibrated[:, k])
        curves.append((row["label"], precision, recall, row["average_precision"]))
        operating.append((row["recall"], row["precision"]))
    calibration = numbers["calibration"]
    pngs = {
        "precision_recall": figures.precision_recall_figure(curves, operating),
        "reliability": figures.reliability_figure(
            calibration["reliability_before"],
            calibration["reliability_after"],
            classifier.temperature,
            "probability of a label",
        ),
    }
    if classifier.history:
        pngs["training_curves"] = figures.training_curves_figure(classifier.history)
    return pngs


def _write_predictions_csv(path: Path, paths, truth, probabilities, classifier) -> None:
    labels, thresholds = classifier.labels, np.asarray(classifier.thresholds)
    buffer = io.StringIO()
    writer = SafeCsvWriter(buffer)
    writer.writerow(["path", "true", "predicted", "scores"])
    for row, image in enumerate(paths):
        true = [labels[k] for k in np.flatnonzero(truth[row] > 0.5)]
        given = [labels[k] for k in np.flatnonzero(probabilities[row] >= thresholds)]
        scores = ";".join(
            f"{label}:{p:.4f}" for label, p in zip(labels, probabilities[row], strict=True)
        )
        writer.writerow([str(image), ";".join(true), ";".join(given), scores])
    atomic_write_text(path, buffer.getvalue())


def _weakest(per_label: list[dict], count: int) -> list[int]:
    """The labels with the lowest average precision (those no photo here shows last), at most
    `count`, in the model's order."""
    order = sorted(
        range(len(per_label)),
        key=lambda k: (
            per_label[k]["average_precision"] is None,
            per_label[k]["average_precision"] or 0,
        ),
    )
    return sorted(order[:count])


def _galleries(classifier, shown_labels, paths, truth, probabilities, heat_maps: bool):
    """Per label shown, the photos it is most wrong about: each with that label's heat map
    when `heat_maps`, and what was missed or falsely given."""
    galleries = {}
    for k in shown_labels:
        label = classifier.labels[k]
        worst = worst_per_label(probabilities, truth, k, WORST_PER_LABEL)
        shown = [paths[row] for row, _ in worst]
        explained = {}
        if heat_maps and shown:
            explained = {str(e.path): e for e in classifier.explain(shown, label, neighbours=0)}
        galleries[label] = [
            {
                "path": str(paths[row]),
                "mistake": mistake,
                "label": label,
                "probability": float(probabilities[row, k]),
                "true": "; ".join(classifier.labels[j] for j in np.flatnonzero(truth[row] > 0.5))
                or "none",
                **gallery_pictures(paths[row], explained.get(str(paths[row]))),
            }
            for row, mistake in worst
        ]
    return galleries
