"""How long `headstart suggest` takes on the largest pool at hand (flowers5, chest_xray,
hymenoptera and the digits sample together: 8,149 photos), warm: the whole command from the
shell, against reading the same features from the cache alone (the baseline, in the same run).
The first run computes the features the cache lacks (cold) and is reported too.

    python bench/suggest.py [--count 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_paths import DATASETS, require

from headstart.context import RunContext
from headstart.data.samples import write_digits
from headstart.labelling.suggest import default_extractor
from headstart.model.prediction import image_list


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scratch = tempfile.mkdtemp()
    write_digits(Path(scratch) / "digits")
    names = ("flowers5", "chest_xray", "hymenoptera")
    folders = [str(require(DATASETS / name)) for name in names] + [f"{scratch}/digits"]
    command = [sys.executable, "-m", "headstart.cli", "suggest", *folders, "-n", str(args.count)]
    first = timed([*command, "-q"])
    paths = image_list(folders)
    warm, reading = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        default_extractor(paths, RunContext(progress=False)).extract_files(paths, False, "")
        reading.append(time.perf_counter() - start)
        warm.append(timed([*command, "-q"]))
    print(f"pool: {len(paths)} photos; first run {first:.1f} s")
    print(f"warm suggest (whole command): {statistics.median(warm):.1f} s")
    print(f"reading the cached features alone: {statistics.median(reading):.1f} s")
    print(f"ratio: {statistics.median(warm) / statistics.median(reading):.1f}x")
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
