"""What a user waits for: whole `headstart` commands from the shell, timed as processes.

Rows (hymenoptera, default settings, fresh folders made here):
- first-ever `train`: an empty cache folder (the backbone is exported to ONNX, then features);
- cold `train`: the backbone already exported, no features cached;
- warm `train`: every feature cached;
- warm `predict` of one photo with a model folder (its features cached), and of a new photo;
- the naive tutorial loop's extraction alone (torchvision ImageFolder + DataLoader + timm eager,
  batch 32) over the same photos at the same input size, in this same run: cold `train` must be
  at least 3x faster although it is a whole process;
- a linear head on 5,784 x 1280 features of 101 classes (Caltech-101's size), in process.

    python bench/wholeprocess.py [--data DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from data_paths import DATASETS, require

DEFAULT_DATA = DATASETS / "hymenoptera"
HEADSTART = [sys.executable, "-m", "headstart.cli"]


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def train_command(data: Path, model: Path, cache: Path) -> list[str]:
    return [*HEADSTART, "train", str(data), "-o", str(model), "--cache-dir", str(cache), "-q"]


def predict_command(model: Path, photo: Path, cache: Path) -> list[str]:
    return [*HEADSTART, "predict", str(model), str(photo), "--cache-dir", str(cache), "-q"]


def fresh_features(cache: Path) -> None:
    """Forget every cached feature, keep the exported backbone."""
    for path in cache.glob("features.sqlite3*"):
        path.unlink()


def naive_extraction_seconds(data: Path, input_size: int) -> float:
    """The tutorial loop over the same photos, imports and model building not counted."""
    sys.path.insert(0, str(Path(__file__).parent))
    from extract import baseline

    from headstart.backbones import resolve_backbone

    with tempfile.TemporaryDirectory() as scratch:
        backbone = resolve_backbone("efficientnet_lite0", Path(scratch), input_size)
        rate, features, _ = baseline(data, backbone)
    return len(features) / rate


def head_seconds() -> float:
    from headstart.training.fit import fit_head
    from headstart.training.settings import FitSettings

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(101, 1280)).astype(np.float32)
    y, vy = rng.integers(0, 101, 5784), rng.integers(0, 101, 600)
    x = np.maximum(centres[y] + 2 * rng.normal(size=(5784, 1280)), 0).astype(np.float32)
    vx = np.maximum(centres[vy] + 2 * rng.normal(size=(600, 1280)), 0).astype(np.float32)
    started = time.perf_counter()
    fit_head(x, y, vx, vy, 101, FitSettings())
    return time.perf_counter() - started


def measure(data: Path, repeats: int, scratch: Path) -> dict[str, list[float]]:
    cache, model = scratch / "cache", scratch / "model"
    photos = sorted((data / "val" / "bees").glob("*.jpg"))
    rows: dict[str, list[float]] = {key: [] for key in ROWS}
    for _ in range(repeats):
        shutil.rmtree(cache, ignore_errors=True)
        rows["first"].append(timed(train_command(data, model, cache)))
        fresh_features(cache)
        rows["cold"].append(timed(train_command(data, model, cache)))
        rows["warm"].append(timed(train_command(data, model, cache)))
        rows["predict"].append(timed(predict_command(model, photos[0], cache)))
        new_photo = scratch / "new.jpg"
        new_photo.write_bytes(photos[1].read_bytes() + b"\0" * len(rows["predict"]))
        rows["predict_new"].append(timed(predict_command(model, new_photo, cache)))
        rows["head"].append(head_seconds())
    rows["naive"].append(naive_extraction_seconds(data, 288))
    return rows


ROWS = {
    "first": "first-ever `train` (empty cache folder)",
    "cold": "cold `train` (backbone exported, no features cached)",
    "warm": "warm `train` (features cached)",
    "predict": "warm `predict`, one photo (features cached)",
    "predict_new": "`predict`, one new photo",
    "naive": "naive tutorial loop, extraction alone (288 px)",
    "head": "linear head, 5,784 x 1280 features, 101 classes (in process)",
}


def arguments(doc: str) -> argparse.Namespace:
    """--data and --repeats, shared with bench/contention.py."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    require(args.data)
    return args


def main() -> None:
    args = arguments(__doc__)
    with tempfile.TemporaryDirectory() as scratch:
        rows = measure(args.data, args.repeats, Path(scratch))
    median = {key: statistics.median(values) for key, values in rows.items()}
    print("| what | seconds (median) | runs |")
    print("|---|---|---|")
    for key, label in ROWS.items():
        runs = ", ".join(f"{v:.2f}" for v in rows[key])
        print(f"| {label} | {median[key]:.2f} | {runs} |")
    print()
    print(f"cold train vs naive extraction alone: {median['naive'] / median['cold']:.2f}x faster")
    print(f"first-ever train / cold train: {median['first'] / median['cold']:.2f}")


if __name__ == "__main__":
    main()
