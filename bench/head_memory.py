"""Memory the linear head's fit needs beyond its features: how large a dataset the driver holds.

Each size runs in a fresh process (peak RSS is per process), on synthetic features as wide as
the default backbone's (1,792: Lite0's pooled head and stages 3-6), 10 classes, a validation
tenth, and the narrower candidate head (1,280) the default fit also tries. Printed: the
feature matrix (the baseline), the peak growth during `fit_head`, and their ratio.

    python bench/head_memory.py [--sizes 50000 200000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

WIDTH, CLASSES, NARROW = 1792, 10, 1280


def measure(count: int) -> dict:
    import numpy as np

    from headstart.training.fit import fit_head
    from headstart.training.settings import FitSettings

    generator = np.random.default_rng(0)
    centres = generator.normal(size=(CLASSES, WIDTH)).astype(np.float32)

    def features(labels: np.ndarray) -> np.ndarray:
        out = np.empty((len(labels), WIDTH), np.float32)
        for start in range(0, len(labels), 5000):
            part = labels[start : start + 5000]
            noise = generator.standard_normal((len(part), WIDTH), dtype=np.float32)
            out[start : start + 5000] = centres[part] + 3 * noise
        return out

    train_y = generator.integers(0, CLASSES, count)
    val_y = generator.integers(0, CLASSES, count // 10)
    train_x, val_x = features(train_y), features(val_y)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    fit_head(train_x, train_y, val_x, val_y, CLASSES, FitSettings(), head_widths=(NARROW,))
    seconds = time.perf_counter() - started
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"features": train_x.nbytes + val_x.nbytes, "growth": growth, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    print(f"{'images':>8} {'features':>10} {'fit growth':>11} {'ratio':>6} {'fit':>6}")
    for count in args.sizes:
        child = [sys.executable, __file__, "--one", str(count)]
        row = json.loads(subprocess.run(child, capture_output=True, text=True, check=True).stdout)
        print(
            f"{count:>8,} {row['features'] / 1e9:>8.2f}GB {row['growth'] / 1e9:>9.2f}GB "
            f"{row['growth'] / row['features']:>5.2f}x {row['seconds']:>5.0f}s"
        )


if __name__ == "__main__":
    main()
