"""The fuzz suite (tests/fuzzing.py) for a bounded time: nothing escapes, memory stays bounded.

$HEADSTART_FUZZ_SECONDS sets the time (20 s by default); $HEADSTART_FUZZ_SEED the seed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import real_photos


@pytest.mark.slow
def test_mutated_images_never_escape_and_never_blow_up_memory(trained, exported, cache_dir):
    _, model = trained
    _, onnx_file = exported
    seconds = os.environ.get("HEADSTART_FUZZ_SECONDS", "20")
    command = [
        sys.executable,
        str(Path(__file__).with_name("fuzzing.py")),
        *["--seconds", seconds, "--seed", os.environ.get("HEADSTART_FUZZ_SEED", "0")],
        *["--photo", str(real_photos("sunflower", 1, skip=21)[0])],
        *["--model", str(model), "--onnx", str(onnx_file), "--cache", str(cache_dir)],
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=float(seconds) + 600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    print(json.dumps(report, indent=2))
    assert report["inputs"] > 100
    assert report["escaped"] == [], report["escaped"][:10]
    assert report["over_memory_bound"] == [], report["over_memory_bound"][:10]
    assert report["outcomes"]["decoded"] > 0 and report["outcomes"]["refused"] > 0
    assert report["outcomes"]["served"] > 0 and report["outcomes"]["predicted"] > 0
