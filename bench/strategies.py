"""Training strategies side by side on one dataset, in one process run.

Validation accuracy (plain, and with test-time augmentation) and wall time for: a linear head,
an MLP head, a linear head on an augmented feature cache, and fine-tuning the top of the
backbone, all with the default backbone. The plain features are cached once before timing;
augmented views and fine-tuning pay for their own extra backbone passes inside their time.

    python bench/strategies.py [--data ../shared/datasets/hymenoptera] [--aug-views 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from data_paths import DATASETS, require

from headstart import FitSettings, train
from headstart.context import RunContext
from headstart.evaluation.score import evaluate

DEFAULT_DATA = DATASETS / "hymenoptera"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--aug-views", type=int, default=4)
    parser.add_argument("--augment", default="light")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="run only these rows (by name)")
    args = parser.parse_args()
    require(args.data)
    base = FitSettings(seed=args.seed, augment=args.augment)
    rows = {
        "linear": base,
        "mlp": replace(base, strategy="mlp"),
        f"linear + {args.aug_views} augmented views": replace(base, aug_views=args.aug_views),
        "finetune (top 3 units)": replace(base, strategy="finetune"),
    }
    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(scratch) / "cache"
        started = time.perf_counter()
        train(
            args.data, settings=base, context=RunContext(cache_dir=cache)
        )  # warms the plain feature cache
        print(f"plain features cached in {time.perf_counter() - started:.1f} s\n")
        print(f"{'strategy':34} {'val acc':>8} {'with TTA':>9} {'val loss':>9} {'time':>9}")
        for name, settings in rows.items():
            if args.only and not any(word in name for word in args.only):
                continue
            started = time.perf_counter()
            classifier = train(args.data, settings=settings, context=RunContext(cache_dir=cache))
            seconds = time.perf_counter() - started
            summary = classifier.summary
            tta = evaluate(classifier, args.data, "val", tta=True)
            print(
                f"{name:34} {summary.val_accuracy:8.2%} {tta.accuracy:9.2%} "
                f"{summary.val_loss:9.4f} {seconds:8.1f}s",
                flush=True,
            )


if __name__ == "__main__":
    main()
