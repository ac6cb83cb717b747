"""Feature extraction speed: headstart against a naive PyTorch baseline, in one process run.

Baseline: torchvision ImageFolder + DataLoader (batch 32) + the same timm model in eager mode,
with timm's own eval transform. headstart: its FeatureExtractor on a cold (empty) cache, with
the one-time ONNX export done before timing. Both see the same real photos.

    python bench/extract.py [--data ../shared/datasets/hymenoptera] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from data_paths import DATASETS, require

from headstart.backbones import resolve_backbone
from headstart.features import FeatureCache, FeatureExtractor

DEFAULT_DATA = DATASETS / "hymenoptera"


def image_folders(root: Path) -> list[Path]:
    splits = [root / name for name in ("train", "val", "test") if (root / name).is_dir()]
    return splits or [root]


def baseline(root: Path, backbone) -> tuple[float, np.ndarray, list[str]]:
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    config = {
        "input_size": (3, *backbone.preprocessing.input_size),
        "interpolation": backbone.preprocessing.interpolation,
        "crop_pct": backbone.preprocessing.crop_pct,
        "mean": backbone.preprocessing.mean,
        "std": backbone.preprocessing.std,
    }
    dataset = torch.utils.data.ConcatDataset(
        [
            ImageFolder(str(folder), transform=create_transform(**config))
            for folder in image_folders(root)
        ]
    )
    paths = [path for part in dataset.datasets for path, _ in part.samples]
    model = backbone.build_module().eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=32)
    started = time.perf_counter()
    features = []
    with torch.no_grad():
        for images, _ in loader:
            features.append(model(images).numpy())
    return len(paths) / (time.perf_counter() - started), np.concatenate(features), paths


def headstart_rate(paths: list[str], backbone, onnx_cache: Path) -> tuple[float, np.ndarray]:
    with tempfile.TemporaryDirectory() as empty:
        extractor = FeatureExtractor(backbone, FeatureCache(empty), engine="onnx")
        extractor.engine = FeatureExtractor(backbone, FeatureCache(onnx_cache), "onnx").engine
        started = time.perf_counter()
        result = extractor.extract_files([Path(p) for p in paths])
        elapsed = time.perf_counter() - started
    assert result.computed == len(paths), result.skipped
    return len(paths) / elapsed, result.features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each")
    args = parser.parse_args()
    require(args.data)
    with tempfile.TemporaryDirectory() as onnx_cache:
        backbone = resolve_backbone("efficientnet_lite0", Path(onnx_cache))
        _ = FeatureExtractor(backbone, FeatureCache(onnx_cache), "onnx").engine  # export once
        base_rates, fast_rates = [], []
        for _ in range(args.repeats):
            rate, reference, paths = baseline(args.data, backbone)
            base_rates.append(rate)
            rate, ours = headstart_rate(paths, backbone, Path(onnx_cache))
            fast_rates.append(rate)
    cosine = np.sum(reference * ours, 1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(ours, axis=1)
    )
    base, fast = max(base_rates), max(fast_rates)
    print(f"images: {len(paths)} from {args.data}")
    print(f"baseline (ImageFolder + DataLoader + eager timm): {base:.1f} img/s")
    print(f"headstart (parallel draft decode + ONNX Runtime): {fast:.1f} img/s")
    print(f"ratio: {fast / base:.2f}x (target >= 2.0x)")
    print(f"feature cosine vs baseline: mean {cosine.mean():.4f}, min {cosine.min():.4f}")


if __name__ == "__main__":
    main()
