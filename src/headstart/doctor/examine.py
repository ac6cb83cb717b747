"""One look at a dataset: every check on the same features, as a list of findings."""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart.data.locations import ImagePath
from headstart.data.sources import Dataset
from headstart.doctor.duplicates import (
    FEATURE_RATIO,
    THUMBNAIL_RATIO,
    exact_groups,
    group_findings,
    group_issue,
    near_groups,
)
from headstart.doctor.findings import ISSUES, Finding, Item
from headstart.doctor.health import health_findings, measurements, thumbnails
from headstart.doctor.labels import (
    likely_label_errors,
    out_of_sample_label_scores,
    out_of_sample_probabilities,
)
from headstart.doctor.neighbours import unit_rows
from headstart.doctor.outliers import far_from_training, outliers_in_class
from headstart.features.extract import FeatureExtractor
from headstart.features.labelled import class_counts, label_array

IMBALANCE = 3.0  # largest class over smallest


@dataclass
class Diagnosis:
    dataset: str
    images: int  # readable images examined
    per_class: dict[str, int]
    findings: list[Finding]
    groups: list[dict[str, Any]]  # every duplicate group, all members, for the page
    near_thresholds: dict[str, float]  # cosine distance under which images are near, per descriptor
    cross_validated_accuracy: float | None  # of the linear head, out of sample
    computed: int  # images that went through the backbone in this run
    seconds: dict[str, float] = field(default_factory=dict)
    multi_label: bool = False  # label sets: the accuracy is of the label decisions

    def counts(self) -> dict[str, int]:
        found = Counter(f.issue for f in self.findings)
        return {issue: found[issue] for issue in ISSUES if found[issue]}

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in self.__dict__.items() if k != "findings"},
            "counts": self.counts(),
            "findings": [f.to_dict() for f in self.findings],
        }


def examine(dataset: Dataset, extractor: FeatureExtractor, progress: bool = False) -> Diagnosis:
    """Every check, on the features of every readable image of `dataset`."""
    clock = _Clock()
    extracted = extractor.extract_files([s.path for s in dataset.samples], progress)
    clock.lap("features")
    samples = [dataset.samples[i] for i in extracted.kept]
    items = [Item(_absolute(s.path), s.label, s.split) for s in samples]
    y = label_array(samples, dataset.classes, dataset.multi_label)
    x, digests = extracted.features, extracted.digests
    unit = unit_rows(x, x.mean(axis=0))
    findings = [Finding(_absolute(p), "unreadable", 0.0, reason) for p, reason in extracted.skipped]
    values = measurements([s.path for s in samples], digests, extractor.cache)
    clock.lap("measurements")
    descriptors = [(unit, FEATURE_RATIO), (thumbnails(values), THUMBNAIL_RATIO)]
    duplicates, groups, thresholds = _duplicates(descriptors, digests, items)
    findings += duplicates
    clock.lap("duplicates")
    labels, accuracy = _label_errors(x, y, items, dataset.classes)
    findings += labels
    clock.lap("labels")
    findings += _outliers(unit, y, items)
    clock.lap("outliers")
    findings += health_findings(values, items, min(extractor.backbone.preprocessing.input_size))
    counts = class_counts(y, len(dataset.classes))
    per_class = {label: int(n) for label, n in zip(dataset.classes, counts, strict=True)}
    findings += _imbalance(per_class)
    clock.lap("health")
    return Diagnosis(
        str(dataset.root),
        len(items),
        per_class,
        sorted(findings, key=_order),
        groups,
        thresholds,
        accuracy,
        extracted.computed,
        clock.laps,
        dataset.multi_label,
    )


def _duplicates(descriptors, digests, items) -> tuple[list[Finding], list[dict], dict]:
    exact = exact_groups(digests)
    near, similarity, thresholds = near_groups(descriptors, digests)
    exact_scores = [1.0] * len(exact)
    findings = group_findings(exact, items, "exact", exact_scores, 1)
    findings += group_findings(near, items, "near", similarity, len(exact) + 1)
    groups = _groups(exact, "exact", exact_scores, items, 1)
    groups += _groups(near, "near", similarity, items, len(exact) + 1)
    return findings, groups, dict(zip(("features", "thumbnail"), thresholds, strict=True))


def _label_errors(x, y, items, classes) -> tuple[list[Finding], float | None]:
    """Suspects, and the cross-validated accuracy of the head that found them (of a
    multi-label head, the share of its label decisions that are right)."""
    if y.ndim == 2:
        if y.sum(axis=0).min() < 2:
            return [], None
        scores = out_of_sample_label_scores(x, y)
        suspects = likely_label_errors(y, scores)
        accuracy = float(((scores > 0.5) == (y > 0.5)).mean())
        return _label_set_findings(suspects, scores, y, items, classes), accuracy
    if np.bincount(y, minlength=len(classes)).min() < 2:
        return [], None
    probabilities = out_of_sample_probabilities(x, y, len(classes))
    accuracy = float((probabilities.argmax(1) == y).mean())
    suspects = likely_label_errors(y, probabilities)
    return _label_findings(suspects, probabilities, y, items, classes), accuracy


def _outliers(unit, y, items) -> list[Finding]:
    # a multi-label photo belongs to several classes: it is compared with the training set only
    in_class = outliers_in_class(unit, y) if y.ndim == 1 else []
    findings = [
        _item_finding(items[i], "outlier-in-class", z, f"robust z {z:.1f} of distance to its class")
        for i, z in in_class
    ]
    is_training = np.array([item.split == "train" for item in items])
    findings += [
        _item_finding(
            items[i], "far-from-training", z, f"robust z {z:.1f} of distance to training images"
        )
        for i, z in far_from_training(unit, is_training)
    ]
    return findings


def _order(finding: Finding) -> tuple:
    """By issue as ISSUES lists them, then duplicate group, then most severe first."""
    return (list(ISSUES).index(finding.issue), finding.group or 0, -finding.score)


def _label_findings(positions, probabilities, y, items, classes) -> list[Finding]:
    findings = []
    for position in positions:
        given, suggested = int(y[position]), int(probabilities[position].argmax())
        confidence = float(probabilities[position, given])
        item = items[position]
        details = (
            f"given {classes[given]} (p={confidence:.2f}), looks like "
            f"{classes[suggested]} (p={probabilities[position, suggested]:.2f})"
        )
        findings.append(
            Finding(
                item.path,
                "label-error",
                1.0 - confidence,
                details,
                item.label,
                item.split,
                suggested=classes[suggested],
            )
        )
    return findings


def _label_set_findings(positions, scores, y, items, classes) -> list[Finding]:
    """Each suspect with the labels that look wrong: given but unlikely, or likely but left
    out; the suggestion is the set the head gives (probability over 1/2)."""
    findings = []
    for position in positions:
        wrong = np.abs(scores[position] - y[position])
        doubtful = [k for k in np.argsort(-wrong) if wrong[k] > 0.5][:3]
        details = "; ".join(
            f"{classes[k]} {'given' if y[position, k] > 0.5 else 'left out'} "
            f"(p={scores[position, k]:.2f})"
            for k in doubtful
        )
        suggested = "; ".join(classes[k] for k in np.flatnonzero(scores[position] > 0.5))
        item = items[position]
        findings.append(
            Finding(
                item.path,
                "label-error",
                float(wrong.max()),
                details or "its labels as a whole look unlikely",
                item.label,
                item.split,
                suggested=suggested or "(none)",
            )
        )
    return findings


def _absolute(image: ImagePath) -> str:
    """A local file's absolute path; an object's URI as given."""
    return os.path.abspath(image) if isinstance(image, Path) else str(image)


def _item_finding(item: Item, issue: str, score: float, details: str) -> Finding:
    return Finding(item.path, issue, score, details, item.label, item.split)


def _imbalance(per_class: dict[str, int]) -> list[Finding]:
    largest = max(per_class, key=lambda label: per_class[label])
    smallest = min(per_class, key=lambda label: per_class[label])
    ratio = per_class[largest] / max(per_class[smallest], 1)
    if ratio < IMBALANCE:
        return []
    details = (
        f"{largest}: {per_class[largest]} images, {smallest}: {per_class[smallest]}; "
        "--balance-classes weights them equally"
    )
    return [Finding("", "class-imbalance", ratio, details)]


def _groups(groups, kind, similarity, items, first) -> list[dict[str, Any]]:
    return [
        {
            "group": number,
            "kind": kind,
            "issue": group_issue([items[m] for m in members], kind),
            "similarity": score,
            "members": [items[m].__dict__ for m in members],
        }
        for number, (members, score) in enumerate(zip(groups, similarity, strict=True), first)
    ]


class _Clock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._last
        self._last = now
