"""Driver memory for training the linear head: how many images one machine's `train` holds.

What `train` does on the driver once features exist, on synthetic features as wide as the
default backbone's (1,792: Lite0's pooled head and stages 3-6), 10 classes, a validation
tenth: read the vectors from a feature cache (SQLite, as the store's parts are read into the
same dict), build the feature matrix, fit the linear head (with the narrower candidate head
the default fit also tries). Each size and matrix type runs in a fresh process, since peak
RSS is per process. float32 is the baseline (what `train` held before); float16 is what it
holds now, with a float32 working copy for the solver when that fits in half the available
memory; "float16 blocks" is the same without that copy, as when memory is short.

    python bench/head_memory.py [--sizes 50000 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WIDTH, CLASSES, NARROW, FINGERPRINT = 1792, 10, 1280, "bench"


def digest(index: int) -> bytes:
    return index.to_bytes(20, "big")


def labels(count: int):
    import numpy as np

    return np.random.default_rng(count).integers(0, CLASSES, count)


def fill_cache(folder: Path, count: int) -> None:
    """`count` training and count/10 validation vectors: class centres plus noise."""
    import numpy as np

    from headstart.features.cache import FeatureCache

    generator = np.random.default_rng(0)
    centres = generator.normal(size=(CLASSES, WIDTH)).astype(np.float32)
    cache = FeatureCache(folder)
    y = np.concatenate([labels(count), labels(count // 10)])
    for start in range(0, len(y), 5000):
        part = y[start : start + 5000]
        noise = generator.standard_normal((len(part), WIDTH), dtype=np.float32)
        vectors = centres[part] + 3 * noise
        cache.put_many(FINGERPRINT, ((digest(start + i), v) for i, v in enumerate(vectors)))
    cache.close()


def measure(folder: Path, count: int, dtype: str) -> dict:
    import numpy as np

    from headstart.features import blocks

    if dtype == "float16 blocks":  # as when memory is short: no float32 copy at all
        blocks.copy_budget = lambda: 0

    from headstart.features.cache import FeatureCache
    from headstart.features.extract import _matrix
    from headstart.training.fit import fit_head
    from headstart.training.settings import FitSettings

    before = current_rss()
    cache = FeatureCache(folder)
    started = time.perf_counter()

    def features(first: int, size: int) -> np.ndarray:
        keys = [digest(first + i) for i in range(size)]
        vectors = cache.get_many(FINGERPRINT, keys)
        return _matrix([vectors[key] for key in keys], dtype.split()[0])

    train_x, val_x = features(0, count), features(count, count // 10)
    read = time.perf_counter()
    fit_head(
        train_x, labels(count), val_x, labels(count // 10), CLASSES, FitSettings(),
        head_widths=(NARROW,),
    )  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak": peak - before, "read": read - started, "fit": time.perf_counter() - read}


def current_rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(*args: str) -> dict:
    command = [sys.executable, __file__, *args]
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--fill", nargs=2, help=argparse.SUPPRESS)  # child: FOLDER COUNT
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # child: FOLDER COUNT DTYPE
    args = parser.parse_args()
    if args.fill:
        fill_cache(Path(args.fill[0]), int(args.fill[1]))
        print("{}")
        return
    if args.one:
        print(json.dumps(measure(Path(args.one[0]), int(args.one[1]), args.one[2])))
        return
    print(f"{'images':>8} {'matrix':>14} {'peak':>8} {'KB/image':>9} {'read':>6} {'fit':>6}")
    for count in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            child("--fill", folder, str(count))
            rows = {dtype: child("--one", folder, str(count), dtype) for dtype in DTYPES}
        for dtype, row in rows.items():
            print(
                f"{count:>8,} {dtype:>14} {row['peak'] / 1e9:>6.2f}GB "
                f"{row['peak'] / count / 1e3:>9.1f} {row['read']:>5.1f}s {row['fit']:>5.0f}s"
            )
        for dtype in DTYPES[1:]:
            peak = rows[dtype]["peak"] / rows["float32"]["peak"]
            fit = rows[dtype]["fit"] / rows["float32"]["fit"]
            print(f"{'':>8} {dtype} / float32: peak {peak:.2f}x, fit time {fit:.2f}x")


DTYPES = ("float32", "float16", "float16 blocks")

if __name__ == "__main__":
    main()
