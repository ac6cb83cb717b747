"""Fine-tuning on Ray Train against the local loop, on the same photos in one run.

Each variant fine-tunes the top 2 units for `--epochs` epochs (no augmentation, so the frozen
trunk runs once) from the same cached features: the local loop, then Ray Train with 1 and 2
data-parallel workers on a local cluster started before timing. Printed: seconds of the
`train` call, the ratio to local, and validation accuracy.

    python bench/ray_finetune.py [--data ../shared/datasets/hymenoptera] [--epochs 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from data_paths import DATASETS, require

from headstart import FitSettings, RunContext, on_ray, train
from headstart.cluster.session import connect

DEFAULT_DATA = DATASETS / "hymenoptera"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    require(args.data)
    settings = FitSettings(
        strategy="finetune", finetune_epochs=args.epochs, unfreeze="2", augment="none"
    )
    local = RunContext(cache_dir=Path(tempfile.mkdtemp(prefix="headstart-ray-ft-")))
    train(args.data, context=local)  # features and the trunk's ONNX file, before timing
    connect("local")
    variants = {
        "local loop": local,
        "ray train, 1 worker": on_ray(context=local, train_workers=1),
        "ray train, 2 workers": on_ray(context=local, train_workers=2),
    }
    print(f"{args.data}: fine-tuning 2 units, {args.epochs} epochs")
    print(f"{'variant':24} {'seconds':>8} {'vs local':>9} {'val accuracy':>13}")
    baseline = None
    for name, context in variants.items():
        started = time.perf_counter()
        classifier = train(args.data, settings=settings, context=context)
        seconds = time.perf_counter() - started
        baseline = baseline or seconds
        accuracy = classifier.summary.val_accuracy
        print(f"{name:24} {seconds:8.1f} {baseline / seconds:8.2f}x {accuracy:13.2%}")


if __name__ == "__main__":
    main()
