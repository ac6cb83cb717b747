"""The ImageNet classifier as a feature: do the backbone's own 1,000 ImageNet log-probabilities
teach a head what a few photos a class cannot?

The packaged EfficientNet-Lite0 keeps its ImageNet classifier, a linear layer on the pooled
head, so the log-probabilities come from the cached features (no new pass). Drawn as in
`bench/small_data.py` (10 to 100 photos a class, several seeds, 10% validation, scored on the
whole test split), each variant fits the head with the pipeline's own function:

- without: the small-data choice among the pooled head alone and every feature (the default
  before the ImageNet classifier was a candidate);
- default: what `train` does now: the same folds may also choose the log-probabilities, alone
  or beside the pooled head, where they beat the simpler choice by more than the folds' spread;
- head + log-probabilities, log-probabilities alone: either of them, always (what forcing the
  prior would cost or gain).

Prints mean and spread (standard deviation over seeds) of test accuracy, and in how many
draws the default chose the log-probabilities.

    python bench/imagenet_prior.py [--only flowers5 hymenoptera] [--seeds 5]
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
from small_data import (
    SIZES,
    accuracy,
    draw,
    each_dataset,
    features_and_backbone,
    labelled_and_test,
)

from headstart.backbones.registry import imagenet_classifier
from headstart.context import RunContext
from headstart.model.heads import PRIOR_KIND
from headstart.training import fit
from headstart.training.choice import FeatureSet
from headstart.training.settings import FitSettings

VARIANTS = ("without", "default", "head + log-probabilities", "log-probabilities alone")


def forced(name: str):
    """Candidates narrowed to one of the prior's feature sets."""

    def only(prior_sets: tuple[FeatureSet, FeatureSet]) -> tuple[FeatureSet, ...]:
        alone, beside = prior_sets
        return (alone,) if name == "log-probabilities alone" else (beside,)

    return only


def run(name: str, path: Path, seeds: int) -> None:
    splits, backbone, classes = features_and_backbone(path)
    widths = backbone.leading_candidates
    x, y, test_x, test_y = labelled_and_test(splits)
    prior = imagenet_classifier(backbone, RunContext().workspace.root)
    print(f"\n{name}: {classes} classes, {len(test_y)} test photos")
    print(f"{'per class':>9}  " + "  ".join(f"{v:>24}" for v in VARIANTS) + "  chosen")
    for per_class in SIZES:
        if per_class > np.bincount(y, minlength=classes).min():
            continue
        scores: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        chosen = 0
        for seed in range(seeds):
            train, val = draw(y, classes, per_class, seed)
            for variant in VARIANTS:
                offered = None if variant == "without" else (lambda: prior)
                result = fitted(variant, x, y, train, val, classes, widths, offered)
                scores[variant].append(accuracy(result, test_x, test_y))
                chosen += variant == "default" and result.head.config.kind == PRIOR_KIND
        cells = "  ".join(
            f"{statistics.mean(s):>16.2%} ± {statistics.pstdev(s):5.2%}" for s in scores.values()
        )
        print(f"{per_class:>9}  {cells}  {chosen}/{seeds}", flush=True)


def fitted(variant, x, y, train, val, classes, widths, offered):
    """The pipeline's head fit; a forced variant keeps only that feature set as a candidate."""
    arguments = (x[train], y[train], x[val], y[val], classes, FitSettings(strategy="linear"))
    if variant in ("without", "default"):
        return fit.fit_head(*arguments, head_widths=widths, small_data=True, prior=offered)
    leading, prior_sets = fit.leading, fit._prior_sets
    fit.leading = lambda widths, total: ()
    fit._prior_sets = lambda prior, total: forced(variant)(prior_sets(prior, total))
    try:
        return fit.fit_head(*arguments, head_widths=widths, small_data=True, prior=offered)
    finally:
        fit.leading, fit._prior_sets = leading, prior_sets


if __name__ == "__main__":
    each_dataset(run, __doc__ or "")
