"""Commands beside other CPU-bound processes: each timed alone, then beside one and two busy
loops (plain Python `while True`), as whole processes, and printed as ratios to alone.

A laptop with a browser open or a shared CI runner is where this runs: a warm `train` must not
take many times longer because another program is busy.

    python bench/contention.py [--data DIR] [--repeats 3]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from wholeprocess import arguments, fresh_features, predict_command, timed, train_command

BUSY = "while True: pass"


@contextmanager
def busy_loops(count: int):
    loops = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(count)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def main() -> None:
    args = arguments(__doc__)
    with tempfile.TemporaryDirectory() as scratch:
        cache, model = Path(scratch) / "cache", Path(scratch) / "model"
        subprocess.run(train_command(args.data, model, cache), check=True)  # export, cache
        photo = sorted((args.data / "val" / "bees").glob("*.jpg"))[0]
        commands = {
            "warm `train`": lambda: timed(train_command(args.data, model, cache)),
            "warm `predict`, one photo": lambda: timed(predict_command(model, photo, cache)),
            "cold `train` (features not cached)": lambda: (
                fresh_features(cache) or timed(train_command(args.data, model, cache))
            ),
        }
        print("| command | alone (s) | beside 1 busy | beside 2 busy |")
        print("|---|---|---|---|")
        for name, run in commands.items():
            seconds = {}
            for busy in (0, 1, 2):
                with busy_loops(busy):
                    seconds[busy] = statistics.median(run() for _ in range(args.repeats))
            alone = seconds[0]
            print(
                f"| {name} | {alone:.2f} | {seconds[1]:.2f} ({seconds[1] / alone:.2f}x) "
                f"| {seconds[2]:.2f} ({seconds[2] / alone:.2f}x) |"
            )


if __name__ == "__main__":
    main()
