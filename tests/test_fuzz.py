"""The fuzz suites (tests/fuzzing.py for image bytes, tests/fuzz_names.py for names) for a
bounded time: nothing escapes, memory stays bounded.

$HEADSTART_FUZZ_SECONDS sets the time (20 s by default); $HEADSTART_FUZZ_SEED the seed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import real_photos


def fuzz(script: str, *options: str) -> dict:
    """Run a fuzzer for $HEADSTART_FUZZ_SECONDS in its own process; its JSON report."""
    seconds = os.environ.get("HEADSTART_FUZZ_SECONDS", "20")
    command = [
        sys.executable,
        str(Path(__file__).with_name(script)),
        *["--seconds", seconds, "--seed", os.environ.get("HEADSTART_FUZZ_SEED", "0")],
        *options,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=float(seconds) + 600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    print(json.dumps(report, indent=2))
    return report


@pytest.mark.slow
def test_mutated_images_never_escape_and_never_blow_up_memory(trained, exported, cache_dir):
    _, model = trained
    _, onnx_file = exported
    report = fuzz(
        "fuzzing.py",
        *["--photo", str(real_photos("sunflower", 1, skip=21)[0])],
        *["--model", str(model), "--onnx", str(onnx_file), "--cache", str(cache_dir)],
    )
    assert report["inputs"] > 100
    assert report["escaped"] == [], report["escaped"][:10]
    assert report["over_memory_bound"] == [], report["over_memory_bound"][:10]
    assert report["outcomes"]["decoded"] > 0 and report["outcomes"]["refused"] > 0
    assert report["outcomes"]["served"] > 0 and report["outcomes"]["predicted"] > 0


@pytest.mark.slow
def test_hostile_names_never_escape_any_writer():
    """Names built from terminal escapes, controls, bidi, formulas, `$`, HTML, line breaks and
    lone surrogates, through the terminal, CSV, HTML, the labels file, metadata and figures."""
    report = fuzz("fuzz_names.py")
    assert report["names"] > 100 and report["checked"]["figure"] > 0
    assert report["escapes"] == 0, report["escaped"][:10]


def test_what_the_name_fuzzer_found_stays_fixed():
    """Before: a cell holding a bare carriage return was written unquoted under '\\n' line
    ends (no CSV reader could read the file back); a name "'=x" was read back as "=x"; a
    class folder's name that is not UTF-8 crashed matplotlib, and so the report."""
    import csv
    import io

    import numpy as np

    from headstart.evaluation.figures import confusion_figure
    from headstart.export.onnx import labels_file
    from headstart.storage import SafeCsvWriter, unquoted

    names = ["a\rb", "'=x", "''=x", "'plain", "=1+2", "-1.5", "c\nd"]
    buffer = io.StringIO()
    SafeCsvWriter(buffer, lineterminator="\n").writerow(names)
    assert buffer.getvalue().endswith('"\n')
    assert [unquoted(cell) for cell in next(csv.reader(io.StringIO(buffer.getvalue())))] == names
    not_utf8 = b"caf\xe9".decode("utf-8", "surrogateescape")
    assert confusion_figure(np.eye(2), [not_utf8, "$x$"], False).startswith(b"\x89PNG")
    assert labels_file([not_utf8, "b"]) == b"caf\xe9\nb\n"
