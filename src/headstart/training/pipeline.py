"""From a labelled dataset to a trained Classifier: the one function the CLI and API share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones.registry import DEFAULT_BACKBONE, resolve_backbone
from headstart.data.sources import Dataset, load_dataset
from headstart.errors import HeadstartError
from headstart.features.cache import FeatureCache
from headstart.features.extract import FeatureExtractor
from headstart.features.labelled import LabelledFeatures, labelled_features
from headstart.model.classifier import Classifier
from headstart.training.fit import fit_head
from headstart.training.settings import FitSettings


@dataclass
class TrainSummary:
    dataset: str
    layout: str
    classes: int
    used: dict[str, int]  # images with features, per split
    skipped: list[tuple[str, str]]  # (path, reason)
    computed: int  # images that went through the backbone (the rest came from the cache)
    train_per_class: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    epochs_run: int = 0
    val_accuracy: float | None = None
    val_loss: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "skipped": [list(item) for item in self.skipped]}


def train(
    data: str | Path | Dataset,
    output: str | Path | None = None,
    *,
    backbone: str = DEFAULT_BACKBONE,
    settings: FitSettings | None = None,
    val_percent: float = 10.0,
    test_percent: float = 10.0,
    cache_dir: str | Path | None = None,
    engine: str = "auto",
    progress: bool = False,
) -> Classifier:
    """Train a classifier head on cached backbone features; save it to `output` if given.

    The returned Classifier's `info["summary"]` says what was used, skipped and measured.
    """
    settings = settings or FitSettings()
    started = time.perf_counter()
    dataset = data if isinstance(data, Dataset) else load_dataset(data, val_percent, test_percent)
    cache = FeatureCache(cache_dir)
    extractor = FeatureExtractor(resolve_backbone(backbone, cache.directory), cache, engine)
    splits = {
        name: labelled_features(
            extractor, dataset.split(name), dataset.classes, progress, f"Features ({name})"
        )
        for name in ("train", "val", "test")
    }
    extracted = time.perf_counter()
    _check_trainable(dataset, splits["train"])
    fit = fit_head(
        splits["train"].x,
        splits["train"].y,
        _or_empty(splits["val"], splits["train"]),
        splits["val"].y,
        len(dataset.classes),
        settings,
        progress,
    )
    summary = _summary(dataset, splits, fit.history, fit.best_epoch)
    summary.seconds = {
        "features": extracted - started,
        "training": time.perf_counter() - extracted,
        "total": time.perf_counter() - started,
    }
    calibration = _calibrate(fit.head, splits["val"])
    classifier = Classifier(
        dataset.classes,
        extractor.backbone.describe(),
        extractor.backbone.preprocessing,
        fit.head,
        fit.config,
        {
            "training": {
                "strategy": settings.head,
                "settings": settings.to_dict(),
                "split": {"val_percent": val_percent, "test_percent": test_percent},
                "dataset": str(dataset.root),
            },
            "summary": summary.to_dict(),
            **({"calibration": calibration} if calibration else {}),
            "history": fit.history,
        },
    )
    if output is not None:
        classifier.save(output)
    return classifier


def _calibrate(head, val: LabelledFeatures) -> dict[str, float] | None:
    """Temperature scaling fitted on the validation split, with its effect on NLL and ECE."""
    import torch

    from headstart.evaluation.calibration import (
        expected_calibration_error,
        fit_temperature,
        nll,
        softmax,
    )

    if not len(val.y):
        return None
    with torch.no_grad():
        logits = head.eval()(torch.from_numpy(val.x)).numpy().astype(np.float64)
    temperature = fit_temperature(logits, val.y)
    before, after = softmax(logits), softmax(logits, temperature)
    return {
        "temperature": temperature,
        "val_nll_before": nll(before, val.y),
        "val_nll_after": nll(after, val.y),
        "val_ece_before": expected_calibration_error(before, val.y),
        "val_ece_after": expected_calibration_error(after, val.y),
    }


def _or_empty(split: LabelledFeatures, like: LabelledFeatures) -> np.ndarray:
    """The split's features, or an empty (0, dim) array when it has none."""
    return split.x if len(split.y) else np.zeros((0, like.x.shape[1]), np.float32)


def _check_trainable(dataset: Dataset, train: LabelledFeatures) -> None:
    counts = np.bincount(train.y, minlength=len(dataset.classes))
    missing = [label for label, n in zip(dataset.classes, counts, strict=True) if n == 0]
    if missing:
        raise HeadstartError(
            f"no usable training images for class(es) {', '.join(missing)}: add images, "
            "or lower --val-percent/--test-percent"
        )


def _summary(dataset, splits, history, best_epoch) -> TrainSummary:
    best = history[best_epoch - 1] if history else {}
    return TrainSummary(
        dataset=str(dataset.root),
        layout=dataset.layout,
        classes=len(dataset.classes),
        used={name: len(split.y) for name, split in splits.items()},
        skipped=[(str(p), r) for split in splits.values() for p, r in split.skipped],
        computed=sum(split.computed for split in splits.values()),
        train_per_class={
            label: int(n)
            for label, n in zip(
                dataset.classes,
                np.bincount(splits["train"].y, minlength=len(dataset.classes)),
                strict=True,
            )
        },
        best_epoch=best_epoch,
        epochs_run=len(history),
        val_accuracy=best.get("val_accuracy"),
        val_loss=best.get("val_loss"),
    )
