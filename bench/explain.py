"""Heat maps, measured: do they point at what each model uses, and what do they cost?

For each dataset and head (linear, MLP, fine-tuned), a model is trained on the dataset's own
splits and its test photos (held-out split; validation for hymenoptera, which has no test) are
explained. Deletion blanks the fifth of the map's cells it ranks highest and measures the fall
of the predicted label's probability; insertion restores only those cells to a blank input and
measures the rise. The baseline, in the same run, is as many cells picked at random: map minus
random says how much better than chance the maps find the evidence. A fine-tuning run that
never beat its head-only start keeps the head alone: the table says so. Also: the time to
explain photos against the time to predict them with their features computed (no cache).

    python bench/explain.py [--cache-dir DIR] [--photos 160] [--heads linear,mlp,finetune]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from data_paths import DATASETS, require

from headstart import FitSettings, load_dataset, train
from headstart.context import RunContext
from headstart.evaluation.faithfulness import measure_faithfulness

SETTINGS = {
    "linear": FitSettings(strategy="linear"),
    "mlp": FitSettings(strategy="mlp"),
    "finetune": FitSettings(strategy="finetune", finetune_epochs=3, unfreeze="2"),
}


def held_out(root: Path, count: int) -> list[Path]:
    dataset = load_dataset(root)
    split = "test" if dataset.split("test") else "val"
    samples = sorted(dataset.split(split), key=lambda s: str(s.path))
    step = max(1, len(samples) // count)
    return [s.path for s in samples[::step][:count]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--photos", type=int, default=160, help="test photos a dataset")
    parser.add_argument("--heads", default="linear,mlp,finetune")
    parser.add_argument("--datasets", default="hymenoptera,flowers5")
    args = parser.parse_args()
    context = RunContext(cache_dir=args.cache_dir)
    print(
        "| dataset | head | photos | deletion: map | random | map - random "
        "| insertion: map | random | map - random | explain / predict time |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.datasets.split(","):
        root = require(DATASETS / name)
        photos = held_out(root, args.photos)
        for head in args.heads.split(","):
            with tempfile.TemporaryDirectory() as folder:
                classifier = train(root, folder, settings=SETTINGS[head], context=context)
                m = measure_faithfulness(
                    classifier.explain_pixels, classifier.preprocessing, photos
                )
                ratio = _time_ratio(classifier, photos[:32])
            kind = head if head != "finetune" or classifier.fine_tuned else "finetune (head kept)"
            print(
                f"| {name} | {kind} | {m.photos} | {m.deletion_by_map:.3f} | "
                f"{m.deletion_at_random:.3f} | {m.deletion_by_map - m.deletion_at_random:+.3f} | "
                f"{m.insertion_by_map:.3f} | {m.insertion_at_random:.3f} | "
                f"{m.insertion_by_map - m.insertion_at_random:+.3f} | {ratio:.1f}x |",
                flush=True,
            )


def _time_ratio(classifier, photos: list[Path]) -> float:
    """Seconds to explain the photos over seconds to predict them with features computed
    afresh (an empty cache, PyTorch's engine): the maps' cost beyond the forward pass."""
    from headstart.context import EngineName

    classifier.explain(photos[:2])  # warm: the network built
    with tempfile.TemporaryDirectory() as empty:
        classifier.context = RunContext(cache_dir=Path(empty), engine=EngineName.TORCH)
        classifier.predict(photos[:2])
        start = time.perf_counter()
        classifier.predict(photos[2:])
        predicting = time.perf_counter() - start
    start = time.perf_counter()
    classifier.explain(photos[2:], neighbours=0)
    return (time.perf_counter() - start) / predicting


if __name__ == "__main__":
    main()
