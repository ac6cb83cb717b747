"""Where the benchmarks find the full datasets, and a clear stop when one is absent."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

DATASETS = Path(
    os.environ.get(
        "HEADSTART_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"
    )
)
WHERE = {
    "hymenoptera": "the PyTorch transfer-learning tutorial's hymenoptera_data.zip",
    "flowers5": 'Kaggle\'s "flowers recognition" (five species, one folder each)',
    "chest_xray": "Kermany et al. 2018's paediatric chest X-rays (Mendeley Data, CC BY 4.0)",
}


def require(path: Path) -> Path:
    """`path` if it is a folder; else exits naming what is missing and where to get it."""
    if path.is_dir():
        return path
    origin = WHERE.get(path.name, "")
    sys.exit(
        f"{path}: no such dataset folder. The benchmarks read full datasets by path: "
        f"{'get ' + origin + ', ' if origin else ''}put it there or set HEADSTART_DATASETS "
        "to the folder that holds it (docs/benchmarks.md lists each one)."
    )


@contextlib.contextmanager
def hymenoptera_model(description: str):
    """For a benchmark on the hymenoptera model: parses --cache-dir, trains the default model
    on the training folder in a scratch folder, and yields it, the validation photos and the
    scratch folder (removed after)."""
    from headstart import train
    from headstart.context import RunContext

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cache-dir", type=Path)
    args = parser.parse_args()
    root = require(DATASETS / "hymenoptera")
    photos = sorted((root / "val").rglob("*.jpg"))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        classifier = train(root, folder / "model", context=RunContext(cache_dir=args.cache_dir))
        yield classifier, photos, folder
