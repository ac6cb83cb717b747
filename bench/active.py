"""Which photos to label next: test accuracy against the number of labels, for each way of
picking them, simulated on fully labelled datasets.

Every run starts from 10 photos labelled at random (the same for every strategy of a seed),
then asks its strategy for 10 more at a time up to 200, refitting the linear head on the
labelled photos' cached features each round (training/solver.py, at the strength the labelling
page uses) and scoring it on the dataset's whole test split. Strategies: random,
typical (TypiClust), margin (least sure first), margin over clusters, and headstart's
default (labelling/suggest.py). Prints mean test accuracy over the seeds at each budget, the
labels each strategy needs to reach 90% and 95% of the accuracy of a head fitted on every
labelled photo, and writes the curves to active.png.

    python bench/active.py [--only flowers5 chest_xray digits] [--seeds 5] [--png active.png]
        [--switch N] [--strategies random,default]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from small_data import each_dataset, features_and_backbone, labelled_and_test

from headstart.labelling import strategies
from headstart.labelling import suggest as suggest_module
from headstart.labelling.suggest import default_picks, leading
from headstart.training.solver import DEFAULT_L2, fit_linear

START, STEP, BUDGET = 10, 10, 200
NAMES = ("random", "typical", "margin", "margin over clusters", "default")
CURVES: dict[str, dict[str, np.ndarray]] = {}


def accuracy(x, y, test_x, test_y, classes) -> float:
    empty = x[:0]
    fit = fit_linear(x, y, empty, y[:0], classes, l2=DEFAULT_L2)
    return float(((test_x @ fit.weight.T + fit.bias).argmax(1) == test_y).mean())


def picks(name, z, x, y, labelled, classes, seed) -> list[int]:
    unlabelled = ~labelled
    if name == "random":
        chosen = strategies.at_random(unlabelled, STEP, seed)
    elif name == "typical":
        chosen = strategies.typical(z, labelled, STEP, seed)
    elif name == "default":
        chosen = default_picks(z, x, y, labelled, classes, STEP, seed)
    else:
        fit = fit_linear(x[labelled], y[labelled], x[:0], y[:0], classes, l2=DEFAULT_L2)
        logits = x @ fit.weight.T + fit.bias
        probabilities = np.exp(logits - logits.max(1, keepdims=True))
        probabilities /= probabilities.sum(1, keepdims=True)
        if name == "margin":
            chosen = strategies.margin(probabilities, unlabelled, STEP)
        else:
            chosen = strategies.margin_over_clusters(z, probabilities, unlabelled, STEP, seed)
    return [pick.index for pick in chosen]


def run(name: str, path: Path, seeds: int) -> None:
    splits, backbone, classes = features_and_backbone(path)
    x, y, test_x, test_y = labelled_and_test(splits)
    # The pooled head's features, as labelling/suggest.py uses them.
    x, test_x = leading(x, backbone.distance_features), leading(test_x, backbone.distance_features)
    z = strategies.embedded(x)
    everything = accuracy(x, y, test_x, test_y, classes)
    budgets = np.arange(START, BUDGET + 1, STEP)
    table = {strategy: np.zeros((seeds, len(budgets))) for strategy in NAMES}
    for seed in range(seeds):
        start = np.zeros(len(y), bool)
        start[np.random.default_rng(1000 + seed).choice(len(y), START, replace=False)] = True
        for strategy in NAMES:
            labelled = start.copy()
            for step in range(len(budgets)):
                table[strategy][seed, step] = accuracy(
                    x[labelled], y[labelled], test_x, test_y, classes
                )
                if step + 1 < len(budgets):
                    labelled[picks(strategy, z, x, y, labelled, classes, seed)] = True
        print(f"  {name}: seed {seed} done", file=sys.stderr, flush=True)
    CURVES[name] = {strategy: table[strategy].mean(0) for strategy in NAMES}
    _print(name, classes, len(test_y), everything, budgets, table)


def _print(name, classes, tests, everything, budgets, table) -> None:
    print(f"\n{name}: {classes} classes, {tests} test photos; every photo labelled: "
          f"{everything:.1%}")  # fmt: skip
    shown = [i for i, b in enumerate(budgets) if b in (10, 20, 30, 50, 100, 150, 200)]
    print("| strategy | " + " | ".join(f"{budgets[i]}" for i in shown) + " | to 90% | to 95% |")
    print("|---" * (len(shown) + 3) + "|")
    for strategy, scores in table.items():
        mean = scores.mean(0)
        cells = " | ".join(f"{mean[i]:.1%}" for i in shown)
        reach = [_labels_to_reach(mean, budgets, share * everything) for share in (0.9, 0.95)]
        print(f"| {strategy} | {cells} | {reach[0]} | {reach[1]} |")
    default, chance = table["default"].mean(0), table["random"].mean(0)
    ahead = int((default[1:] > chance[1:]).sum())
    print(f"default ahead of random at {ahead} of {len(budgets) - 1} budgets after the start")


def _labels_to_reach(mean: np.ndarray, budgets: np.ndarray, target: float) -> str:
    reached = np.flatnonzero(mean >= target)
    return str(int(budgets[reached[0]])) if len(reached) else f"> {budgets[-1]}"


def _figure(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.4), squeeze=False)
    budgets = np.arange(START, BUDGET + 1, STEP)
    for axis, (name, curves) in zip(axes[0], CURVES.items(), strict=True):
        for strategy, mean in curves.items():
            axis.plot(budgets, mean, label=strategy, linewidth=2.2 if strategy == "default" else 1)
        axis.set(title=name, xlabel="labelled photos", ylabel="test accuracy")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _option(name: str) -> str | None:
    """An option of this bench's own, taken off the command line before the shared ones."""
    if name not in sys.argv:
        return None
    at = sys.argv.index(name)
    value = sys.argv[at + 1]
    del sys.argv[at : at + 2]
    return value


if __name__ == "__main__":
    png = _option("--png")
    switch = _option("--switch")  # labels a class before the default turns to the margin
    if switch is not None:
        suggest_module.SWITCH_PER_CLASS = int(switch)
        suggest_module.SWITCH_AT_LEAST = 0
    only = _option("--strategies")
    if only is not None:
        NAMES = tuple(name for name in NAMES if name in only.split(","))
    each_dataset(run, __doc__ or "")
    if png is not None:
        _figure(Path(png))
