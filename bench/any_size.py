"""`export --any-size` against the model folder: does the resize and crop inside the graph
give the predictions headstart gives, on real photos of every size (hymenoptera's validation
photos run from 193 to 2592 px wide), and at what cost?

Trains the default model on hymenoptera's training folder, exports it both ways and predicts
every validation photo with the model folder (Pillow's resize, JPEG draft decoding), and with
the any-size file (the whole decoded photo in). Prints top-1 agreement, the gap between the
two probabilities of the model folder's label (mean, 99th percentile, largest, share within
0.01), and the seconds each took from the files, with the fixed-size export's as the baseline.

    python bench/any_size.py [--cache-dir DIR]
"""

from __future__ import annotations

import time

import numpy as np
from data_paths import hymenoptera_model

from headstart.export.onnx import export_classifier
from headstart.export.runtime import OnnxClassifier


def main() -> None:
    with hymenoptera_model(__doc__.splitlines()[0]) as (classifier, photos, folder):
        export_classifier(classifier, folder / "fixed.onnx")
        export_classifier(classifier, folder / "any.onnx", any_size=True)
        ours = classifier.predict(photos, top_k=2)
        fixed, any_size = OnnxClassifier(folder / "fixed.onnx"), OnnxClassifier(folder / "any.onnx")
        fixed.predict(photos[:2]), any_size.predict(photos[:2])  # warm
        start = time.perf_counter()
        fixed.predict(photos, top_k=2)
        fixed_seconds = time.perf_counter() - start
        start = time.perf_counter()
        theirs = any_size.predict(photos, top_k=2)
        any_seconds = time.perf_counter() - start
    agree = sum(a.labels[0] == b.labels[0] for a, b in zip(ours, theirs, strict=True))
    gaps = np.array(
        [
            abs(a.probabilities[0] - b.probabilities[b.labels.index(a.labels[0])])
            for a, b in zip(ours, theirs, strict=True)
        ]
    )
    print(f"{len(photos)} photos: top-1 agrees on {agree} ({agree / len(photos):.1%})")
    print(
        f"probability gap: mean {gaps.mean():.4f}, p99 {np.quantile(gaps, 0.99):.4f}, "
        f"largest {gaps.max():.4f}, within 0.01 for {np.mean(gaps <= 0.01):.1%}"
    )
    print(
        f"seconds: any-size {any_seconds:.2f}, fixed-size export {fixed_seconds:.2f} "
        f"(ratio {any_seconds / fixed_seconds:.2f}x)"
    )


if __name__ == "__main__":
    main()
