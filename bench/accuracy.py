"""Accuracy where it matters: test top-1 and balanced accuracy on data unlike ImageNet, per
training variant, beside the seconds the whole `train` call took with an empty feature cache.

Datasets: flowers5 (hashed split), chest_xray (its own split; paediatric X-rays, 1:3),
scikit-learn's handwritten digits (written by `headstart sample digits`, hashed split) and
hymenoptera (its val split; ImageNet's own photos, a pipeline check). Validation and test images
that `headstart doctor` finds copied from training (exact or resized: 155 in chest_xray, 13 in
flowers5) are left out of every run, since a memorised copy tests nothing.

Variants, each trained by `headstart.train` as a user would run it:
- before: the default command before this benchmark existed (Lite0 at 288 px, the linear head
  on the pooled last layer alone);
- balanced: the default command (Lite0, pooled head and stages 3-6; 288 px, or 224 when the
  photos' typical shorter side is below 288; `--strategy auto` with its 5-minute budget);
- balanced + linear: the linear head alone, the default before `auto` was;
- balanced + mlp: the MLP head on the same features;
- balanced + balance-classes: the linear head with `--balance-classes` (loss weighted 1/class
  size);
- balanced + finetune: `--strategy finetune` (its defaults: top 3 units, light augmentation,
  up to 6 epochs);
- fast: Lite0 at 224 px; best: Lite0, Lite1 and Lite2 side by side at 320 px.

The linear head is deterministic (full-batch L-BFGS), so one run each; the spread that matters
there is the test set's own: one image is 100 / test images percent. The MLP and fine-tuning
draw on their seed (dropout, order, augmentation): 3 seeds each, mean and spread.

    python bench/accuracy.py [--only flowers5 chest_xray] [--variants balanced best]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from data_paths import DATASETS, require
from sklearn.metrics import balanced_accuracy_score

from headstart import FitSettings, RunContext, diagnose, load_dataset, train
from headstart.data.exclude import read_exclusions
from headstart.data.samples import write_digits
from headstart.evaluation.score import evaluate

LEAKS = ("exact-leak", "near-leak")
VARIANTS = (
    "before",
    "balanced",
    "balanced + mlp",
    "balanced + balance-classes",
    "balanced + finetune",
    "fast",
    "best",
)
STRATEGIES = ("linear", "mlp", "finetune")  # named in a variant; auto, the default, otherwise
SEEDED = ("mlp", "finetune")


def leak_list(data: Path, scratch: Path) -> Path:
    """Validation and test copies of training images, as `train --exclude` reads them."""
    diagnosis = diagnose(data, context=RunContext(cache_dir=scratch / "doctor-cache"))
    leaks = sorted({str(f.path) for f in diagnosis.findings if f.issue in LEAKS})
    listing = scratch / f"{data.name}-leaks.txt"
    listing.write_text("".join(f"{path}\n" for path in leaks), encoding="utf-8")
    return listing


def run(data: Path, variant: str, leaks: Path, scratch: Path, seed: int) -> dict:
    """One cold `train` (its own empty cache) and its test scores."""
    import headstart.backbones.registry as registry

    context = RunContext(cache_dir=scratch / f"cache-{data.name}-{variant}")  # seed 0 is cold
    options = {"preset": variant} if variant in ("fast", "best") else {}
    if variant == "before":
        options = {"input_size": 288}
    settings = FitSettings(
        strategy=next(
            (name for name in STRATEGIES if name in variant),
            "linear" if variant == "before" else "auto",
        ),
        balance_classes="balance-classes" in variant,
        seed=seed,
    )
    stages = registry.DEFAULT_POOLED_STAGES
    if variant == "before":
        registry.DEFAULT_POOLED_STAGES = ()
    try:
        started = time.perf_counter()
        classifier = train(data, settings=settings, context=context, exclude=leaks, **options)
        seconds = time.perf_counter() - started
    finally:
        registry.DEFAULT_POOLED_STAGES = stages
    summary = classifier.summary
    dataset = load_dataset(data).without(read_exclusions(leaks))[0]
    evaluation = evaluate(classifier, dataset)
    scored = classifier.evaluation_set(dataset).labelled
    truth, predicted = scored.y, classifier.probabilities(scored.x).argmax(1)
    return {
        "top1": evaluation.accuracy,
        "balanced": balanced_accuracy_score(truth, predicted),
        "images": len(truth),
        "split": evaluation.split,
        "seconds": seconds,
        "size": classifier.preprocessing.input_size[0],
        "chosen": f"{summary.strategy}: {summary.reason or 'as asked'}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="datasets by name")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        write_digits(scratch / "digits")
        datasets = [DATASETS / "flowers5", DATASETS / "chest_xray", scratch / "digits"]
        datasets.append(DATASETS / "hymenoptera")
        for data in datasets:
            if not args.only or data.name in args.only:
                require(data)
        print(
            "| dataset | variant | px | test top-1 | balanced accuracy | images | cold train s "
            "| what ran, and why |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for data in datasets:
            if args.only and data.name not in args.only:
                continue
            leaks = leak_list(data, scratch)
            for variant in args.variants:
                seeds = (0, 1, 2) if any(name in variant for name in SEEDED) else (0,)
                rows = [run(data, variant, leaks, scratch, seed) for seed in seeds]
                print(_row(data.name, variant, rows), flush=True)


def _row(name: str, variant: str, rows: list[dict]) -> str:
    top1 = [r["top1"] for r in rows]
    spread = f" ± {statistics.pstdev(top1):.2%}" if len(rows) > 1 else ""
    balanced = statistics.mean(r["balanced"] for r in rows)
    return (
        f"| {name} ({rows[0]['split']}) | {variant} | {rows[0]['size']} | "
        f"{statistics.mean(top1):.2%}{spread} | "
        f"{balanced:.2%} | {rows[0]['images']} | {rows[0]['seconds']:.0f} | {rows[0]['chosen']} |"
    )


if __name__ == "__main__":
    main()
