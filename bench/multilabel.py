"""Multi-label accuracy on real photos: 2x2 mosaics of flowers5 (1 to 4 species a mosaic, the
photos split before tiling), headstart's default command against a per-label logistic
regression from scikit-learn on the same features.

Each row trains on the mosaics' training split (all of it, or its first N rows for the
small-data rows), with the same validation split, and scores the same test split: mAP, macro
and micro F1, exact-set accuracy. A comment line under each size compares one temperature
shared by the labels with one a label (test NLL). scikit-learn's reference is `OneVsRestClassifier(
LogisticRegression())` at its defaults (C=1, threshold 0.5), and again with each label's
threshold chosen on validation as headstart chooses it.

    python bench/multilabel.py [--cache-dir DIR] [--mosaics DIR] [--small 100 300]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
from data_paths import DATASETS, require

from headstart import FitSettings, RunContext, train
from headstart.data.mosaics import write_mosaics
from headstart.evaluation.multilabel import f1_thresholds, multi_label_metrics
from headstart.evaluation.score import score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--mosaics", type=Path, help="Reuse (or write) the mosaics here")
    parser.add_argument("--small", type=int, nargs="*", default=[100, 300])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.mosaics or Path(scratch) / "mosaics"
        listing = folder / "labels.csv"
        if not listing.exists():
            made = write_mosaics(require(DATASETS / "flowers5"), folder)
            print(f"wrote {made.mosaics} mosaics of {made.labels}")
        context = RunContext(cache_dir=args.cache_dir, progress=False)
        rows = csv.reader(listing.read_text().splitlines())
        header, *body = list(rows)
        training = [row for row in body if row[2] == "train"]
        sizes = [*sorted(args.small), len(training)]
        print("| training mosaics | method | mAP | macro F1 | micro F1 | exact set | seconds |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        for size in sizes:
            kept = training[:size] + [row for row in body if row[2] != "train"]
            subset = Path(scratch) / f"labels-{size}.csv"
            with subset.open("w", newline="") as handle:
                csv.writer(handle).writerows([header, *kept])
            # the subset lists the mosaics by path relative to it
            subset.write_text(subset.read_text().replace("images/", f"{folder}/images/"))
            for name, numbers, seconds in compare(subset, context, Path(scratch) / str(size)):
                print(
                    f"| {size} | {name} | {numbers['mAP']:.3f} | {numbers['macro_f1']:.3f} | "
                    f"{numbers['micro_f1']:.3f} | {numbers['exact_match']:.1%} | {seconds:.1f} |",
                    flush=True,
                )


def compare(listing: Path, context: RunContext, scratch: Path):
    """(method, test scores, seconds) for headstart's default and MLP heads and the
    scikit-learn references, on one listing's splits."""
    for name, settings in (
        ("headstart default", FitSettings()),
        ("headstart --strategy mlp", FitSettings(strategy="mlp")),
    ):
        started = time.perf_counter()
        classifier = train(listing, scratch / name.replace(" ", "_"), settings=settings,
                           context=context)  # fmt: skip
        seconds = time.perf_counter() - started
        scored = score(classifier, listing)
        yield name, scored.evaluation.to_dict(), seconds
        if name == "headstart default":
            yield from sklearn_rows(classifier, listing, scored)
            temperatures(classifier, listing, scored)


def sklearn_rows(classifier, listing: Path, scored):
    """The reference on the features the default model's head reads."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    dataset = classifier.evaluation_dataset(listing)
    features = {
        split: classifier.evaluation_set(dataset, split, keep_duplicates=True).labelled
        for split in ("train", "val")
    }
    test = scored.photos.labelled
    started = time.perf_counter()
    model = OneVsRestClassifier(LogisticRegression(max_iter=5000), n_jobs=1)
    model.fit(features["train"].x.astype(np.float32), features["train"].y.astype(int))
    seconds = time.perf_counter() - started
    probabilities = model.predict_proba(test.x.astype(np.float32))
    labels, halves = classifier.labels, (0.5,) * len(classifier.labels)
    yield (
        "scikit-learn LogisticRegression a label",
        multi_label_metrics(probabilities, test.y, labels, halves),
        seconds,
    )
    val = features["val"]
    chosen = f1_thresholds(model.predict_proba(val.x.astype(np.float32)), val.y)
    yield (
        "scikit-learn, thresholds chosen on validation",
        multi_label_metrics(probabilities, test.y, labels, chosen),
        seconds,
    )


def temperatures(classifier, listing: Path, scored) -> None:
    """One temperature shared by the labels (what headstart fits) against one a label, each
    fitted on validation: the test split's summed binary cross entropy under each."""
    from scipy.special import log_expit

    from headstart.training.temperature import fit_temperature

    val = classifier.evaluation_set(listing, "val", keep_duplicates=True).labelled
    test = scored.photos.labelled
    val_z, test_z = (classifier.logits(s.x).astype(np.float64) for s in (val, test))

    def nll(z):
        y = test.y
        return float(-(y * log_expit(z) + (1 - y) * log_expit(-z)).sum(axis=1).mean())

    shared = fit_temperature(val_z, val.y)
    each = np.array([fit_temperature(val_z[:, [k]], val.y[:, [k]]) for k in range(val.y.shape[1])])
    print(
        f"<!-- test NLL: no temperature {nll(test_z):.4f}, one shared {nll(test_z / shared):.4f}, "
        f"one a label {nll(test_z / each):.4f} -->"
    )


if __name__ == "__main__":
    main()
