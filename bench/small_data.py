"""Small data: the head's choices made on a few dozen validation photos against the same
choices made by cross-validation, with the head then fitted on training and validation.

From each dataset's labelled photos (those outside its test split) it draws 10, 25, 50 and 100
photos per class, several seeds each; 10% of them (at least one per class) are validation, as
`train`'s hashed split makes them; every variant is scored on the dataset's whole test split
(hymenoptera has none: its `val` folder is the test split here, never drawn from).

- validation: how `train` chose before (the L2 strength, and all pooled stages or the last
  layer alone, by validation loss), fitted on the training photos alone;
- cross-validation: the same choices by 5-fold cross-validation over training and validation,
  fitted on the training photos alone (what the choice alone is worth);
- default: what `train` does now below 100 validation photos: those choices (the backbone's
  ImageNet classifier's log-probabilities among the candidates: bench/imagenet_prior.py), then
  the head fitted on training and validation.

Features come from the default backbone (cached: the first run extracts them), and every
variant fits the head with the pipeline's own function (training/fit.py), so the gap between
variants is the choice and the refit alone. Prints mean and spread (standard deviation over
seeds) of test accuracy, and the seconds each choice took.

    python bench/small_data.py [--only flowers5 hymenoptera] [--seeds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from data_paths import DATASETS, require

from headstart import RunContext, load_dataset
from headstart.backbones.registry import (
    Backbone,
    imagenet_classifier,
    preset_backbone,
    resolve_backbone,
)
from headstart.data.images import typical_short_side
from headstart.data.samples import write_digits
from headstart.features.extract import FeatureExtractor
from headstart.features.labelled import labelled_features
from headstart.features.store import open_feature_cache
from headstart.training.fit import fit_head
from headstart.training.settings import FitSettings

SIZES = (10, 25, 50, 100)
VARIANTS = ("validation", "cross-validation", "default")


def features(path: Path) -> tuple[dict, tuple[int, ...], int]:
    """Labelled features of every split, the head widths `train` weighs, the class count."""
    splits, backbone, classes = features_and_backbone(path)
    return splits, backbone.leading_candidates, classes


def features_and_backbone(path: Path) -> tuple[dict, Backbone, int]:
    dataset = load_dataset(path, 10, 10)
    cache = open_feature_cache(RunContext(progress=True))
    side = typical_short_side([sample.path for sample in dataset.split("train")])
    name, size = preset_backbone(None, None, None)
    backbone = resolve_backbone(name, cache.workspace.root, size, image_side=side)
    extractor = FeatureExtractor(backbone, cache, "auto")
    splits = {
        split: labelled_features(
            extractor, dataset.split(split), dataset.classes, True, split, np.float16
        )
        for split in ("train", "val", "test")
    }
    return splits, backbone, len(dataset.classes)


def labelled_and_test(splits: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Photos to draw from, and the test split (the val folder where there is no test)."""
    if len(splits["test"].y):
        pool = [splits["train"], splits["val"]]
        test = splits["test"]
    else:
        pool, test = [splits["train"]], splits["val"]
    x = np.concatenate([part.x for part in pool])
    y = np.concatenate([part.y for part in pool])
    return x, y, test.x, test.y


def draw(y: np.ndarray, classes: int, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) indices: `per_class` photos of each class, 10% validation."""
    rng = np.random.default_rng(seed)
    picked = np.concatenate(
        [
            rng.choice(np.flatnonzero(y == c), min(per_class, int((y == c).sum())), replace=False)
            for c in range(classes)
        ]
    )
    validation = np.concatenate(
        [rng.choice(picked[y[picked] == c], 1, replace=False) for c in range(classes)]
    )
    rest = np.setdiff1d(picked, validation)
    extra = max(0, round(0.1 * len(picked)) - classes)
    validation = np.concatenate([validation, rng.choice(rest, extra, replace=False)])
    return np.setdiff1d(picked, validation), validation


def accuracy(fit, x: np.ndarray, y: np.ndarray) -> float:
    return float((fit.head.logits(x).argmax(1) == y).mean())


def run(name: str, path: Path, seeds: int) -> None:
    splits, backbone, classes = features_and_backbone(path)
    widths = backbone.leading_candidates
    workspace = RunContext().workspace.root
    prior = imagenet_classifier(backbone, workspace)
    x, y, test_x, test_y = labelled_and_test(splits)
    print(f"\n{name}: {classes} classes, {len(test_y)} test photos")
    print(f"{'per class':>9}  " + "  ".join(f"{v:>18}" for v in VARIANTS) + "  choice s")
    for per_class in SIZES:
        if per_class > np.bincount(y, minlength=classes).min():
            continue
        scores = {variant: [] for variant in VARIANTS}
        seconds = []
        for seed in range(seeds):
            train, val = draw(y, classes, per_class, seed)
            for variant in VARIANTS:
                # With fine-tuning to follow, a head keeps to the training photos: the choice alone.
                strategy = "finetune" if variant == "cross-validation" else "linear"
                settings = FitSettings(strategy=strategy)
                began = time.perf_counter()
                fit = fit_head(
                    x[train], y[train], x[val], y[val], classes, settings,
                    head_widths=widths, small_data=variant != "validation",
                    prior=lambda: prior,
                )  # fmt: skip
                if variant == "default":
                    seconds.append(time.perf_counter() - began)
                scores[variant].append(accuracy(fit, test_x, test_y))
        cells = "  ".join(
            f"{statistics.mean(s):>10.2%} ± {statistics.pstdev(s):5.2%}" for s in scores.values()
        )
        print(f"{per_class:>9}  {cells}  {statistics.mean(seconds):8.2f}", flush=True)


def each_dataset(run: Callable[[str, Path, int], None], description: str) -> None:
    """Parse --only and --seeds, then `run` each dataset (digits written to a scratch folder)."""
    parser = argparse.ArgumentParser(description=description)
    everything = ["flowers5", "chest_xray", "digits", "hymenoptera"]
    parser.add_argument("--only", nargs="*", default=everything)
    parser.add_argument("--seeds", type=int, default=5)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        for name in options.only:
            if name == "digits":
                path = Path(scratch) / "digits"
                write_digits(path)
            else:
                path = require(DATASETS / name)
            run(name, path, options.seeds)


if __name__ == "__main__":
    each_dataset(run, __doc__ or "")
