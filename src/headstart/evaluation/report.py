"""`headstart report`: one self-contained report.html plus the same figures as PNG, JSON and CSV."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax

from headstart.data.images import thumbnail_base64
from headstart.data.sources import Dataset
from headstart.evaluation import figures
from headstart.evaluation.calibration import expected_calibration_error, reliability_bins
from headstart.evaluation.html import report_page
from headstart.evaluation.metrics import Evaluation
from headstart.evaluation.multilabel import MultiLabelEvaluation
from headstart.evaluation.score import score
from headstart.storage import (
    SafeCsvWriter,
    atomic_write_bytes,
    atomic_write_text,
    check_output_folder,
)

GALLERY_SIZE = 24  # per gallery: keeps a 10,000-image report to a few MB
THUMBNAIL = 128
NEIGHBOUR_THUMBNAIL = 40
TOP_K = 5
REPORT_FILES = ("report.html", "metrics.json")  # what an earlier report left


def write_report(
    classifier,
    data: str | Path | Dataset,
    folder: str | Path,
    split: str | None = None,
    *,
    keep_duplicates: bool = False,
    tta: bool = False,
    heat_maps: bool = True,
) -> Path:
    """Evaluate `classifier` on `data` (the images `headstart.evaluate` would score) and write
    the report into `folder`; returns report.html. Features come through the classifier's
    context (cache folder, engine, progress). `heat_maps` draws the galleries' photos with
    their predicted label's heat map (PyTorch computes them)."""
    return report_and_evaluation(classifier, data, folder, split, keep_duplicates, tta, heat_maps)[
        0
    ]


def report_and_evaluation(
    classifier,
    data: str | Path | Dataset,
    folder: str | Path,
    split: str | None = None,
    keep_duplicates: bool = False,
    tta: bool = False,
    heat_maps: bool = True,
) -> tuple[Path, Evaluation | MultiLabelEvaluation]:
    """`write_report`, also handing back the evaluation it scored (so it is scored once)."""
    folder = Path(folder)
    check_output_folder(folder, "report", REPORT_FILES, None if isinstance(data, Dataset) else data)
    folder.mkdir(parents=True, exist_ok=True)
    scored = score(classifier, data, split, tta=tta, keep_duplicates=keep_duplicates)
    if classifier.multi_label:
        from headstart.evaluation.multilabel_report import write_multi_label_report

        numbers, written = write_multi_label_report(classifier, scored, folder, heat_maps)
        atomic_write_text(folder / "metrics.json", json.dumps(numbers, indent=2) + "\n")
        return written, scored.evaluation
    evaluation, calibrated = scored.evaluation, scored.probabilities
    assert isinstance(evaluation, Evaluation)
    dataset, labelled = scored.photos.dataset, scored.photos.labelled
    logits = classifier.logits(labelled.x).astype(np.float64)
    raw = softmax(logits, axis=1)  # before the temperature, one view: the figure's "before"
    numbers = _numbers(classifier, dataset, evaluation, raw, calibrated, labelled.y)
    pngs = _figures(classifier, evaluation, numbers, raw, calibrated, labelled.y)
    for name, data_bytes in pngs.items():
        atomic_write_bytes(folder / f"{name}.png", data_bytes)
    atomic_write_text(folder / "metrics.json", json.dumps(numbers, indent=2) + "\n")
    write_rows_csv(folder / "per_class.csv", evaluation.per_class)
    paths = [sample.path for sample in labelled.samples]
    _write_predictions_csv(
        folder / "predictions.csv", paths, labelled.y, calibrated, classifier.labels
    )
    explain = classifier.explain if heat_maps else None
    galleries = _galleries(paths, labelled.y, calibrated, classifier.labels, explain)
    title = f"headstart report: {len(classifier.labels)} classes"
    page = report_page(title, numbers, pngs, galleries)
    atomic_write_text(folder / "report.html", page)
    return folder / "report.html", evaluation


def _numbers(classifier, dataset, evaluation, raw, calibrated, truth) -> dict[str, Any]:
    from sklearn.metrics import balanced_accuracy_score

    summary, training = classifier.summary, classifier.training
    confusion = np.array(evaluation.confusion)
    off_diagonal = [
        (int(confusion[i, j]), classifier.labels[i], classifier.labels[j])
        for i, j in zip(*np.nonzero(confusion), strict=True)
        if i != j
    ]
    return {
        **evaluation.to_dict(),
        "balanced_accuracy": float(balanced_accuracy_score(truth, calibrated.argmax(1))),
        # what the model trained on, not the evaluated folder's own hashed split
        "images_per_split": (summary and summary.used) or dataset.counts(),
        "backbone": classifier.backbone.to_dict(),
        "strategy": training.strategy if training else None,
        "training_seconds": summary.seconds.get("total") if summary else None,
        "train_per_class": (summary and summary.train_per_class)
        or dict(Counter(s.label for s in dataset.split("train"))),
        "most_confused": [
            {"true": t, "predicted": p, "count": n}
            for n, t, p in sorted(off_diagonal, reverse=True)[:20]
        ],
        "calibration": calibration_numbers(classifier, raw, calibrated, truth),
    }


def calibration_numbers(classifier, raw, calibrated, truth) -> dict[str, Any]:
    """The temperature, and the calibration error and reliability before and after it."""
    return {
        "temperature": classifier.temperature,
        "ece_before": expected_calibration_error(raw, truth),
        "ece_after": expected_calibration_error(calibrated, truth),
        "reliability_before": reliability_bins(raw, truth),
        "reliability_after": reliability_bins(calibrated, truth),
        "fitted_on_validation": (
            classifier.calibration.to_dict() if classifier.calibration else None
        ),
    }


def _figures(classifier, evaluation, numbers, raw, calibrated, truth) -> dict[str, bytes]:
    confusion = np.array(evaluation.confusion)
    calibration = numbers["calibration"]
    pngs = {
        "confusion_counts": figures.confusion_figure(confusion, classifier.labels, False),
        "confusion_normalised": figures.confusion_figure(confusion, classifier.labels, True),
        "accuracy_vs_training_images": figures.accuracy_vs_images_figure(
            evaluation.per_class, numbers["train_per_class"]
        ),
        "reliability": figures.reliability_figure(
            calibration["reliability_before"],
            calibration["reliability_after"],
            classifier.temperature,
        ),
    }
    history = classifier.history
    if history:
        pngs["training_curves"] = figures.training_curves_figure(history)
    return pngs


def write_rows_csv(path: Path, rows: list[dict]) -> None:
    """Rows of one shape (per class, per label) as a CSV, their keys as its header."""
    buffer = io.StringIO()
    writer = SafeCsvWriter(buffer)
    writer.writerow(list(rows[0]))
    writer.writerows([row[key] for key in rows[0]] for row in rows)
    atomic_write_text(path, buffer.getvalue())


def _write_predictions_csv(path, paths, truth, probabilities, labels) -> None:
    buffer = io.StringIO()
    writer = SafeCsvWriter(buffer)
    writer.writerow(["path", "true", "predicted", "probability", "top_k"])
    order = np.argsort(-probabilities, axis=1)[:, :TOP_K]
    for row, image in enumerate(paths):
        top = order[row]
        writer.writerow(
            [
                str(image),
                labels[truth[row]],
                labels[top[0]],
                f"{probabilities[row, top[0]]:.6f}",
                ";".join(f"{labels[i]}:{probabilities[row, i]:.4f}" for i in top),
            ]
        )
    atomic_write_text(path, buffer.getvalue())


def _galleries(paths, truth, probabilities, labels, explain=None) -> dict[str, list[dict]]:
    """The most confident mistakes and the least confident correct predictions; with
    `explain` (Classifier.explain), each photo with its predicted label's heat map and the
    training photos nearest to it."""
    predicted = probabilities.argmax(1)
    confidence = probabilities.max(1)
    wrong = [i for i in np.argsort(-confidence) if predicted[i] != truth[i]][:GALLERY_SIZE]
    unsure = [i for i in np.argsort(confidence) if predicted[i] == truth[i]][:GALLERY_SIZE]
    shown = [paths[i] for i in wrong + unsure]
    explained = {str(e.path): e for e in (explain(shown) if explain and shown else [])}

    def items(indices):
        return [
            {
                "path": str(paths[i]),
                "true": labels[truth[i]],
                "predicted": labels[predicted[i]],
                "probability": float(confidence[i]),
                **gallery_pictures(paths[i], explained.get(str(paths[i]))),
            }
            for i in indices
        ]

    return {"Most confident mistakes": items(wrong), "Least confident correct": items(unsure)}


def gallery_pictures(path, explanation) -> dict[str, Any]:
    """The photo as a base64 JPEG, with its heat map when it has one, and the nearest
    training photos as small thumbnails."""
    from headstart.evaluation.overlays import thumbnail_base64 as with_heat_map

    if explanation is None or explanation.heatmap is None:
        return {"thumbnail": thumbnail_base64(path, THUMBNAIL), "heat_map": False}
    return {
        "thumbnail": with_heat_map(explanation, THUMBNAIL),
        "heat_map": True,
        "neighbours": [
            {
                "path": n.path,
                "label": n.label,
                "similarity": n.similarity,
                "thumbnail": thumbnail_base64(n.path, NEIGHBOUR_THUMBNAIL),
            }
            for n in explanation.neighbours
        ],
    }
