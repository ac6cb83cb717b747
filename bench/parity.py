"""The model folder against its ONNX export, photo by photo: the largest gap between their
probabilities, and whether every photo gets the same labels, on hymenoptera's validation
photos (the default model) and on flowers5 mosaics (a multi-label model).

    python bench/parity.py [--cache-dir DIR] [--mosaics DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from data_paths import DATASETS, require

from headstart import FitSettings, RunContext, train
from headstart.data.mosaics import write_mosaics
from headstart.export.onnx import export_classifier
from headstart.export.runtime import OnnxClassifier


def compare(classifier, photos: list[Path], onnx_file: Path) -> str:
    exported = OnnxClassifier(export_classifier(classifier, onnx_file)).predict(photos, 1000)
    ours = classifier.predict(photos, 1000)
    gap = max(
        float(np.abs(np.array(a.probabilities) - np.array(b.probabilities)).max())
        for a, b in zip(exported, ours, strict=True)
    )
    same = sum(a.label == b.label for a, b in zip(exported, ours, strict=True))
    return f"{len(photos)} photos, largest gap {gap:.2g}, the same labels for {same}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--mosaics", type=Path, help="Reuse (or write) the mosaics here")
    args = parser.parse_args()
    context = RunContext(cache_dir=args.cache_dir, progress=False)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        root = require(DATASETS / "hymenoptera")
        classifier = train(root, folder / "model", context=context)
        photos = sorted((root / "val").rglob("*.jpg"))
        print("hymenoptera, default model:", compare(classifier, photos, folder / "m.onnx"))
        mosaics = args.mosaics or folder / "mosaics"
        if not (mosaics / "labels.csv").exists():
            write_mosaics(require(DATASETS / "flowers5"), mosaics)
        settings = FitSettings(strategy="linear")
        multi = train(mosaics / "labels.csv", folder / "multi", settings=settings, context=context)
        photos = sorted((mosaics / "images" / "test").iterdir())
        print("flowers5 mosaics, multi-label:", compare(multi, photos, folder / "multi.onnx"))


if __name__ == "__main__":
    main()
