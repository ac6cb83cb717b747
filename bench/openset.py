"""'None of the above': how well the unknown-image score separates photos of the known classes
from photos of none of them, against the maximum softmax probability (MSP) baseline.

Known: three flowers5 classes (daisy, dandelion, rose), trained with the default command's
settings on their own hashed split. Unknown: the other two flower classes (near: still flowers)
and every ants/bees photo (far). Scored on the known classes' test split against the unknowns:
AUROC (higher is better) and the share of unknowns passed as known when 95% of known test images
pass (FPR at 95% TPR, lower is better); and how many of each the model's own threshold flags.

    python bench/openset.py [--cache-dir DIR] [--strategy linear]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
from data_paths import DATASETS, require
from sklearn.metrics import roc_auc_score

from headstart import FitSettings, load_dataset, train
from headstart.context import RunContext
from headstart.evaluation.score import evaluate

KNOWN = ("daisy", "dandelion", "rose")


def fpr_at_95_tpr(known: np.ndarray, unknown: np.ndarray) -> float:
    return float((unknown <= np.quantile(known, 0.95)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--strategy", default=FitSettings.strategy, help="default: %(default)s")
    args = parser.parse_args()
    flowers = load_dataset(require(DATASETS / "flowers5"))
    known = replace(
        flowers,
        classes=list(KNOWN),
        samples=[s for s in flowers.samples if s.label in KNOWN],
    )
    classifier = train(
        known,
        settings=FitSettings(strategy=args.strategy),
        context=RunContext(cache_dir=args.cache_dir, progress=False),
    )
    summary = classifier.summary
    print(f"strategy {summary.strategy}: {summary.reason or 'as asked'}")
    extractor = classifier.extractor()
    test = [s.path for s in known.split("test")]
    sets = {
        "known (test split)": test,
        "near (other flowers)": [s.path for s in flowers.samples if s.label not in KNOWN],
        "far (ants, bees)": [
            s.path for s in load_dataset(require(DATASETS / "hymenoptera")).samples
        ],
    }
    features = {name: extractor.extract_files(paths).features for name, paths in sets.items()}
    scores = {
        "MSP (1 - max probability)": {
            n: 1 - classifier.probabilities(f).max(1) for n, f in features.items()
        },
        "headstart unknown score": {n: classifier.unknown_scores(f) for n, f in features.items()},
    }
    inside = "known (test split)"
    print(f"known test top-1: {evaluate(classifier, known).accuracy:.2%}")
    print("| score | unknowns | AUROC | FPR at 95% TPR |")
    print("|---|---|---|---|")
    for name, by_set in scores.items():
        for what in ("near (other flowers)", "far (ants, bees)"):
            truth = np.r_[np.zeros(len(by_set[inside])), np.ones(len(by_set[what]))]
            auroc = roc_auc_score(truth, np.r_[by_set[inside], by_set[what]])
            fpr = fpr_at_95_tpr(by_set[inside], by_set[what])
            print(f"| {name} | {what} | {auroc:.3f} | {fpr:.1%} |")
    own = scores["headstart unknown score"]
    flagged = {n: float(classifier.unknown.flags(s).mean()) for n, s in own.items()}
    print(
        "flagged unknown by the model's threshold: "
        + ", ".join(f"{n} {share:.1%}" for n, share in flagged.items())
    )


if __name__ == "__main__":
    main()
