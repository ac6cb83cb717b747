"""What `headstart doctor` finds when the problems are known, and what it costs.

Planted on flowers5 (4,054 photos, class folders), each in a fresh copy of the folder made of
symbolic links:
- label errors: 5% of the training split's images moved to another class folder (seeded, 3
  seeds); precision and recall of the doctor's label-error list, and precision at the size of
  the planted set (the top k suspects, k = number flipped);
- duplicates: 20 photos copied, resized to 50-90% and re-encoded as JPEG at quality 60-90, ten
  into another class (conflicting labels) and ten into their own class under a new name (the
  hashed split puts some in val/test: leaks); the share found in an exact or near group with
  their original;
- false alarms: the findings on the untouched folder.
Time of the whole `doctor` command on the 4,054 photos, cold (empty feature cache) and warm,
from the shell.

    python bench/doctor.py
"""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from data_paths import DATASETS, require
from PIL import Image

from headstart.data.sources import load_dataset

FLOWERS = DATASETS / "flowers5"
HEADSTART = Path(sys.executable).parent / "headstart"


def linked_copy(target: Path) -> dict[Path, Path]:
    """flowers5 as symbolic links under `target`: {link: original}."""
    links = {}
    for original in sorted(FLOWERS.rglob("*.jpg")):
        link = target / original.relative_to(FLOWERS)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(original)
        links[link] = original
    return links


def doctor(data: Path, output: Path, cache: Path) -> tuple[float, list[dict]]:
    began = time.perf_counter()
    command = [str(HEADSTART), "doctor", str(data), "-o", str(output), "--cache-dir", str(cache)]
    subprocess.run([*command, "-q"], check=True)
    seconds = time.perf_counter() - began
    with open(output / "issues.csv", encoding="utf-8") as handle:
        return seconds, list(csv.DictReader(handle))


def flip_labels(root: Path, seed: int) -> set[str]:
    dataset = load_dataset(root)
    train = [s for s in dataset.samples if s.split == "train"]
    rng = random.Random(seed)
    flipped = set()
    for sample in rng.sample(train, round(0.05 * len(train))):
        other = rng.choice([c for c in dataset.classes if c != sample.label])
        moved = root / other / f"flipped-{sample.path.name}"
        sample.path.rename(moved)
        flipped.add(str(moved.absolute()))
    return flipped


def plant_copies(root: Path, links: dict[Path, Path], seed: int) -> dict[str, str]:
    """{copy: original} for 20 resized, re-encoded copies."""
    rng = random.Random(seed)
    classes = sorted(p.name for p in root.iterdir())
    planted = {}
    for number, link in enumerate(rng.sample(sorted(links), 20)):
        label = link.parent.name
        into = rng.choice([c for c in classes if c != label]) if number < 10 else label
        image = Image.open(links[link]).convert("RGB")
        scale = rng.uniform(0.5, 0.9)
        image = image.resize((round(image.width * scale), round(image.height * scale)))
        copy = root / into / f"copy-{number}-{link.stem}.jpg"
        image.save(copy, quality=rng.randint(60, 90))
        planted[str(copy.absolute())] = str(link.absolute())
    return planted


def found_copies(output: Path, planted: dict[str, str]) -> int:
    """Planted copies that share a duplicate group (doctor.json lists all members) with
    their original."""
    groups = json.loads((output / "doctor.json").read_text(encoding="utf-8"))["groups"]
    members = [{m["path"] for m in group["members"]} for group in groups]
    return sum(
        any(copy in group and original in group for group in members)
        for copy, original in planted.items()
    )


def main() -> None:
    require(FLOWERS)
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        cache = work / "cache"
        untouched = work / "untouched"
        linked_copy(untouched)
        cold, rows = doctor(untouched, work / "out-untouched", cache)
        warm, _ = doctor(untouched, work / "out-untouched", cache)
        print(
            f"doctor on {len(list(untouched.rglob('*.jpg'))):,} photos: cold {cold:.1f} s, "
            f"warm {warm:.1f} s (warm/cold {warm / cold:.2f})"
        )
        print("findings on the untouched folder:", dict(Counter(r["issue"] for r in rows)))

        for seed in range(3):
            root = work / f"flipped-{seed}"
            linked_copy(root)
            flipped = flip_labels(root, seed)
            _, rows = doctor(root, work / f"out-flipped-{seed}", cache)
            ranked = [r["path"] for r in rows if r["issue"] == "label-error"]
            hits = sum(path in flipped for path in ranked)
            top = sum(path in flipped for path in ranked[: len(flipped)])
            print(
                f"seed {seed}: {len(flipped)} labels flipped; doctor lists {len(ranked)}: "
                f"precision {hits / max(len(ranked), 1):.2f}, recall {hits / len(flipped):.2f}; "
                f"precision at {len(flipped)}: {top / len(flipped):.2f}"
            )

        root = work / "copies"
        links = linked_copy(root)
        planted = plant_copies(root, links, seed=0)
        doctor(root, work / "out-copies", cache)
        found = found_copies(work / "out-copies", planted)
        print(f"planted copies found as exact or near duplicates: {found}/{len(planted)}")


if __name__ == "__main__":
    main()
