"""Rebuilds tests/data from the full datasets (maintainers only; the tests never run this).

Picks the photos the tests use, shrinks any longer than 320 px on their long side, and writes
tests/data/SOURCES.csv naming each file's origin and licence. Deterministic: the same datasets
give the same files.

    python scripts/make_test_data.py [--datasets ../shared/datasets]
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
TARGET = REPO / "tests" / "data"
LONG_SIDE = 320
FLOWERS_PER_CLASS = 36
XRAYS_PER_CLASS = 4
# The two ImageNet photos the backbone checks name by class (ImageNet's terms: research only,
# so no more than these).
IMAGENET = ["val/ants/1124525276_816a07c17f.jpg", "val/bees/144098310_a4176fd54d.jpg"]
FLOWERS_LICENCE = "CC BY (Flickr; see README.md)"
XRAY_LICENCE = "CC BY 4.0"
IMAGENET_LICENCE = "ImageNet terms of access (non-commercial research and education)"


def shrink_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        if max(image.size) <= LONG_SIDE:
            shutil.copyfile(source, target)
            return
        scale = LONG_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image.convert(image.mode if image.mode in ("L", "RGB") else "RGB").resize(
            size, Image.Resampling.LANCZOS
        ).save(target, "JPEG", quality=85)


def flickr_url(name: str) -> str:
    return f"https://www.flickr.com/photo.gne?id={name.split('_')[0]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    args = parser.parse_args()
    rows = []
    for label in ("daisy", "sunflower"):
        for source in sorted((args.datasets / "flowers5" / label).glob("*.jpg"))[
            :FLOWERS_PER_CLASS
        ]:
            target = TARGET / "flowers" / label / source.name
            shrink_or_copy(source, target)
            rows.append(
                (target, "Kaggle flowers recognition", flickr_url(source.name), FLOWERS_LICENCE)
            )
    for label in ("NORMAL", "PNEUMONIA"):
        folder = args.datasets / "chest_xray" / "test" / label
        for source in sorted(folder.glob("*.jpg"))[:XRAYS_PER_CLASS]:
            target = TARGET / "xray" / label / source.name
            shrink_or_copy(source, target)
            rows.append((target, "Kermany et al., Cell 2018", source.name, XRAY_LICENCE))
    for name in IMAGENET:
        source = args.datasets / "hymenoptera" / name
        target = TARGET / "imagenet" / Path(name).parent.name / source.name
        shrink_or_copy(source, target)
        rows.append(
            (target, "ImageNet via the PyTorch transfer-learning tutorial", name, IMAGENET_LICENCE)
        )
    with open(TARGET / "SOURCES.csv", "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["file", "dataset", "original", "licence"])
        for target, dataset, original, licence in rows:
            writer.writerow([target.relative_to(TARGET).as_posix(), dataset, original, licence])
    size = sum(path.stat().st_size for path in TARGET.rglob("*") if path.is_file())
    print(f"{len(rows)} photos, {size / 1e6:.2f} MB in {TARGET}")


if __name__ == "__main__":
    main()
