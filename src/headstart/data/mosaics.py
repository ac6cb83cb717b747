"""A multi-label photo set made from a single-label one: 2x2 mosaics of its photos, each
labelled with the classes its tiles show (1 to 4 of them).

The photos are split (by the same hash as any dataset's) before they are tiled, so no photo
is in two splits and a score on the test mosaics is a score on unseen photos.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from headstart.data.images import decode_rgb
from headstart.data.sources import load_dataset
from headstart.storage import atomic_write_bytes, atomic_write_text

TILES = 4  # a 2x2 grid


@dataclass(frozen=True)
class MosaicSet:
    listing: Path  # labels.csv: path,labels,split
    mosaics: dict[str, int]  # per split
    labels: list[str]


def write_mosaics(
    source: str | Path,
    folder: str | Path,
    *,
    tile: int = 160,
    per_photo: float = 1.0,
    val_percent: float = 10.0,
    test_percent: float = 20.0,
    seed: int = 0,
) -> MosaicSet:
    """Write mosaics of `source`'s photos (any dataset headstart reads, single-label) into
    `folder`, with `labels.csv` listing each one's labels (space-separated) and split.

    Each split gets `per_photo` mosaics for each of its photos; a mosaic first draws how many
    classes it shows (1 to 4, evenly), then which, then fills its tiles with photos of
    those classes, each class at least once."""
    dataset = load_dataset(source, val_percent, test_percent)
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    rows, counts = [], {}
    for split in ("train", "val", "test"):
        pools = {
            label: [s.path for s in dataset.split(split) if s.label == label]
            for label in dataset.classes
        }
        present = [label for label, pool in pools.items() if pool]
        count = round(per_photo * len(dataset.split(split)))
        counts[split] = count
        for number in range(count):
            shown = rng.integers(1, min(TILES, len(present)) + 1)
            kinds = rng.choice(present, size=shown, replace=False)
            tiles = list(kinds) + list(rng.choice(kinds, size=TILES - len(kinds)))
            rng.shuffle(tiles)
            photos = [pools[kind][rng.integers(len(pools[kind]))] for kind in tiles]
            name = f"{split}/{number:05d}.jpg"
            target = folder / "images" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, _mosaic(photos, tile))
            rows.append([f"images/{name}", " ".join(sorted(set(tiles))), split])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "labels", "split"])
    writer.writerows(rows)
    listing = folder / "labels.csv"
    atomic_write_text(listing, buffer.getvalue())
    return MosaicSet(listing, counts, list(dataset.classes))


def _mosaic(photos: list, tile: int) -> bytes:
    canvas = Image.new("RGB", (2 * tile, 2 * tile))
    for index, photo in enumerate(photos):
        image = decode_rgb(Path(photo).read_bytes())
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        square = image.crop((left, top, left + side, top + side)).resize(
            (tile, tile), Image.Resampling.BICUBIC
        )
        canvas.paste(square, ((index % 2) * tile, (index // 2) * tile))
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()
