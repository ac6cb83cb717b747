"""The ImageNet classifier as a feature: do the backbone's own 1,000 ImageNet log-probabilities,
beside the pooled features, teach a head what a few photos a class cannot?

The packaged EfficientNet-Lite0 keeps its ImageNet classifier, a linear layer on the pooled
head, so the log-probabilities are computed from the cached features (no new pass). Drawn as in
`bench/small_data.py` (10 to 100 photos a class, several seeds, 10% validation, scored on the
whole test split), each variant fits the head with the pipeline's own small-data path:

- default: the features `train` uses (pooled head and stages 3-6; cross-validation chooses
  between them and the pooled head alone);
- + log-probabilities: the 1,000 ImageNet log-probabilities appended, and cross-validation
  may also choose them (kept only where it prefers them, as a product would);
- head + log-probabilities: the pooled head and the log-probabilities, without the stages;
- log-probabilities alone: what they carry by themselves;
- folds choose: cross-validation chooses among the pooled head, the default features, the
  log-probabilities alone and the head with them (in that order of simplicity, each kept only
  if it beats the simpler choice by more than the folds' spread), as a product could.

    python bench/imagenet_prior.py [--only flowers5 hymenoptera] [--seeds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from data_paths import DATASETS, require
from scipy.special import log_softmax
from small_data import SIZES, accuracy, draw, features, labelled_and_test

from headstart.backbones.packaged import PACKAGED_WEIGHTS, load_packaged_module
from headstart.data.samples import write_digits
from headstart.training.choice import _path_by_fold, stratified_folds
from headstart.training.fit import fit_head
from headstart.training.settings import FitSettings
from headstart.training.solver import L2_PATH, fit_linear

VARIANTS = (
    "default",
    "+ log-probabilities",
    "head + log-probabilities",
    "log-probabilities alone",
    "folds choose",
)


def imagenet_log_probabilities(pooled: np.ndarray) -> np.ndarray:
    network = load_packaged_module(PACKAGED_WEIGHTS["efficientnet_lite0"], with_classifier=True)
    classifier = network.get_classifier()
    with torch.no_grad():
        logits = classifier(torch.from_numpy(pooled.astype(np.float32))).numpy()
    return log_softmax(logits.astype(np.float64), axis=1).astype(np.float32)


def folds_choose(
    x: np.ndarray, y: np.ndarray, classes: int, candidates: list[np.ndarray]
) -> tuple[int, float]:
    """The candidate (columns of x) and L2 strength the folds prefer, simplest first."""
    folds = stratified_folds(y, classes)
    count = int(folds.max()) + 1
    losses = [_path_by_fold(x[:, c], y, folds, classes, 0.0, None)[0] for c in candidates]
    best = [int(np.argmin(loss.mean(axis=0))) for loss in losses]
    chosen = 0
    for other in range(1, len(candidates)):
        difference = losses[chosen][:, best[chosen]] - losses[other][:, best[other]]
        if difference.mean() > difference.std(ddof=1) / np.sqrt(count):
            chosen = other
    return chosen, L2_PATH[best[chosen]]


def run(name: str, path: Path, seeds: int) -> None:
    splits, widths, classes = features(path)
    x, y, test_x, test_y = labelled_and_test(splits)
    head = widths[0]  # the pooled head: what the ImageNet classifier reads
    with_prior = np.concatenate([x, imagenet_log_probabilities(x[:, :head])], axis=1)
    test_prior = np.concatenate([test_x, imagenet_log_probabilities(test_x[:, :head])], axis=1)
    inputs = {
        "default": (x, test_x, widths),
        "+ log-probabilities": (with_prior, test_prior, (*widths, x.shape[1])),
        "head + log-probabilities": (
            np.delete(with_prior, np.s_[head : x.shape[1]], axis=1),
            np.delete(test_prior, np.s_[head : x.shape[1]], axis=1),
            (),
        ),
        "log-probabilities alone": (with_prior[:, x.shape[1] :], test_prior[:, x.shape[1] :], ()),
    }
    total, width = with_prior.shape[1], x.shape[1]
    candidates = [
        np.arange(head),
        np.arange(width),
        np.arange(width, total),
        np.r_[np.arange(head), np.arange(width, total)],
    ]
    print(f"\n{name}: {classes} classes, {len(test_y)} test photos")
    print(f"{'per class':>9}  " + "  ".join(f"{v:>23}" for v in VARIANTS) + "  kept  chosen")
    for per_class in SIZES:
        if per_class > np.bincount(y, minlength=classes).min():
            continue
        scores: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        kept, chosen = 0, []
        for seed in range(seeds):
            train, val = draw(y, classes, per_class, seed)
            for variant, (features_x, features_test, widths_weighed) in inputs.items():
                fit = fit_head(
                    features_x[train], y[train], features_x[val], y[val], classes,
                    FitSettings(strategy="linear"), head_widths=widths_weighed, small_data=True,
                )  # fmt: skip
                scores[variant].append(accuracy(fit, features_test, test_y))
                if variant == "+ log-probabilities":
                    kept += fit.features is None  # every feature: the log-probabilities kept
            pool = np.concatenate([train, val])
            choice, l2 = folds_choose(with_prior[pool], y[pool], classes, candidates)
            columns = candidates[choice]
            fit = fit_linear(
                with_prior[pool][:, columns], y[pool], with_prior[:0, columns], y[:0], classes,
                l2=l2,
            )  # fmt: skip
            logits = test_prior[:, columns] @ fit.weight.T + fit.bias
            scores["folds choose"].append(float((logits.argmax(1) == test_y).mean()))
            chosen.append(str(choice))
        cells = "  ".join(
            f"{statistics.mean(s):>15.2%} ± {statistics.pstdev(s):5.2%}" for s in scores.values()
        )
        print(f"{per_class:>9}  {cells}  {kept}/{seeds}  {''.join(chosen)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
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
    main()
