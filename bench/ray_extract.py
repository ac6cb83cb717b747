"""Feature extraction through Ray against the local path, on the same photos in one run.

Each variant computes every photo's features into its own empty feature store (the ONNX file
is exported once before timing, as a warm cache folder has it): the local path (threads and
one ONNX Runtime session on this machine's cores), then a local Ray cluster with 1 actor
using every core and with 1 actor per core. The cluster is started once before timing (its
start is printed on its own); each Ray run includes starting its actors and loading the
engine in them, as every `--ray` command does. Printed: images/s, the ratio to the local
path, the store's bytes per image, and the projection for 1M and 10M photos.

    python bench/ray_extract.py [--data ../shared/datasets/hymenoptera] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from data_paths import DATASETS, require

from headstart.backbones import resolve_backbone
from headstart.cluster import RayCluster
from headstart.cluster.session import connect
from headstart.data.images import visible_images
from headstart.features import FeatureCache, FeatureExtractor
from headstart.features.store import ParquetFeatureStore
from headstart.threads import cpu_threads

DEFAULT_DATA = DATASETS / "hymenoptera"


def timed(photos, backbone, cache_dir: Path, store: Path, runner=None) -> tuple[float, int]:
    extractor = FeatureExtractor(backbone, ParquetFeatureStore(store, cache_dir), runner=runner)
    started = time.perf_counter()
    result = extractor.extract_files(photos)
    seconds = time.perf_counter() - started
    assert result.computed == len(result.kept), "the store was not empty"
    size = sum(f.stat().st_size for f in store.rglob("*.parquet"))
    return seconds, size // max(1, len(result.kept))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    require(args.data)
    photos = visible_images(args.data)
    cores = cpu_threads()
    scratch = Path(tempfile.mkdtemp(prefix="headstart-ray-bench-"))
    cache = FeatureCache(scratch / "cache")
    backbone = resolve_backbone("efficientnet_lite0", cache.workspace.root)
    FeatureExtractor(backbone, cache).engine  # noqa: B018  the one-time ONNX export
    started = time.perf_counter()
    ray = connect("local")
    print(f"{len(photos)} photos from {args.data}; {cores} cores; Ray {ray.__version__} local")
    print(f"cluster start: {time.perf_counter() - started:.1f} s (once per command)")
    variants = {
        "local path": None,
        "ray, 1 actor x all cores": RayCluster(actors=1, cpus_per_actor=cores),
        "ray, 1 actor per core": RayCluster(actors=cores, cpus_per_actor=1),
    }
    best: dict[str, float] = {}
    per_image = 0
    for repeat in range(args.repeats):
        for name, runner in variants.items():
            store = scratch / f"store-{repeat}-{len(best)}-{name.replace(' ', '')}"
            seconds, per_image = timed(photos, backbone, cache.workspace.root, store, runner)
            best[name] = min(best.get(name, float("inf")), seconds)
    local = len(photos) / best["local path"]
    print(f"\n{'variant':28} {'images/s':>9} {'vs local':>9}")
    for name, seconds in best.items():
        rate = len(photos) / seconds
        print(f"{name:28} {rate:9.1f} {rate / local:8.2f}x")
    print(f"\nstore: {per_image} bytes per image (Parquet, float16)")
    per_core = local / cores
    for count in (1_000_000, 10_000_000):
        hours = count / per_core / 3600
        print(
            f"{count:>10,} photos: {hours:,.0f} core-hours ({hours / 64:.1f} h on 64 cores), "
            f"store {count * per_image / 1e9:.1f} GB, features in the driver "
            f"{count * per_image * 2 / 1e9:.1f} GB at float32"
        )
    if os.environ.get("KEEP_SCRATCH") is None:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
