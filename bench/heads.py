"""Head solvers side by side on cached features: AdamW mini-batches (3 seeds) against the full-batch
L-BFGS logistic regression with its L2 strength chosen on validation.

Features are extracted once (cached) before timing; each row times head training alone. Reports
validation and test top-1, validation loss and seconds, per dataset.

    python bench/heads.py [--data DIR ...] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from data_paths import DATASETS, require

from headstart import FitSettings, load_dataset
from headstart.backbones.registry import resolve_backbone
from headstart.features.cache import FeatureCache
from headstart.features.extract import FeatureExtractor
from headstart.features.labelled import labelled_features
from headstart.model.heads import HeadConfig
from headstart.training.fit import fit_by_gradient
from headstart.training.solver import fit_linear, scores

DEFAULT_DATA = [DATASETS / name for name in ("hymenoptera", "flowers5", "chest_xray")]


def splits(data: Path, cache_dir: Path | None):
    dataset = load_dataset(data)
    cache = FeatureCache(cache_dir)
    extractor = FeatureExtractor(
        resolve_backbone("efficientnet_lite0", cache.workspace.root), cache
    )
    return {
        name: labelled_features(extractor, dataset.split(name), dataset.classes, True, name)
        for name in ("train", "val", "test")
    }, len(dataset.classes)


def adamw_row(parts, classes: int, seed: int) -> dict[str, float]:
    """The linear head as headstart trained it before: AdamW mini-batches, early stopping."""
    started = time.perf_counter()
    config = HeadConfig("linear", parts["train"].x.shape[1], classes)
    fit = fit_by_gradient(
        parts["train"].x,
        parts["train"].y,
        parts["val"].x,
        parts["val"].y,
        config,
        replace(FitSettings(), seed=seed),
    )
    seconds = time.perf_counter() - started
    logits = {k: fit.head.logits(v.x) for k, v in parts.items() if len(v.y)}
    return _row(logits, parts, seconds)


def lbfgs_row(parts, classes: int) -> dict[str, float]:
    started = time.perf_counter()
    fit = fit_linear(parts["train"].x, parts["train"].y, parts["val"].x, parts["val"].y, classes)
    seconds = time.perf_counter() - started
    logits = {k: v.x @ fit.weight.T + fit.bias for k, v in parts.items() if len(v.y)}
    return {**_row(logits, parts, seconds), "l2": fit.l2}


def _row(logits, parts, seconds) -> dict[str, float]:
    val_loss, val_accuracy = scores(logits["val"], parts["val"].y)
    row = {"val_accuracy": val_accuracy, "val_loss": val_loss, "seconds": seconds}
    if len(parts["test"].y):
        row["test_accuracy"] = scores(logits["test"], parts["test"].y)[1]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="*", default=DEFAULT_DATA)
    parser.add_argument("--cache-dir", type=Path)
    args = parser.parse_args()
    for data in args.data:
        require(data)
    print("| dataset | head | val top-1 | test top-1 | val loss | seconds |")
    print("|---|---|---|---|---|---|")
    for data in args.data:
        parts, classes = splits(data, args.cache_dir)
        adamw = [adamw_row(parts, classes, seed) for seed in (0, 1, 2)]
        lbfgs = lbfgs_row(parts, classes)
        for name, rows in (("AdamW mini-batch (3 seeds)", adamw), ("L-BFGS, L2 on val", [lbfgs])):
            cells = [
                _cell([r.get(k, np.nan) for r in rows], k)
                for k in ("val_accuracy", "test_accuracy", "val_loss", "seconds")
            ]
            print(f"| {data.name} | {name} | " + " | ".join(cells) + " |")


def _cell(values: list[float], key: str) -> str:
    if any(np.isnan(values)):
        return "-"
    mean = statistics.fmean(values)
    spread = (
        f" ± {statistics.pstdev(values):.{1 if 'acc' in key else 3}f}" if len(values) > 1 else ""
    )
    if "accuracy" in key:
        spread = f" ± {100 * statistics.pstdev(values):.1f}" if len(values) > 1 else ""
        return f"{100 * mean:.2f}%{spread}"
    return f"{mean:.{4 if 'loss' in key else 2}f}{spread}"


if __name__ == "__main__":
    main()
