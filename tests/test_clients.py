"""The clients in examples/: other languages run the any-size model and agree with Python."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import XRAYS, real_photos

from headstart.export.onnx import export_classifier

NODE_CLIENT = Path(__file__).resolve().parents[1] / "examples" / "node"
PHOTOS = real_photos("daisy", 6, skip=20) + real_photos("sunflower", 6, skip=20) + XRAYS[:2]


@pytest.fixture(scope="module")
def any_size_file(trained, tmp_path_factory):
    classifier, _ = trained
    return export_classifier(
        classifier, tmp_path_factory.mktemp("clients") / "m.onnx", any_size=True
    )


@pytest.mark.skipif(
    not (shutil.which("node") and (NODE_CLIENT / "node_modules").is_dir())
    and not os.environ.get("CI"),
    reason="Node.js or the example's packages (scripts/install.sh installs them) are missing",
)
def test_the_javascript_client_agrees_with_python(trained, any_size_file):
    classifier, _ = trained
    command = [
        "node",
        str(NODE_CLIENT / "classify.mjs"),
        str(any_size_file),
        "--json",
        "--top-k",
        "2",
    ]
    result = subprocess.run(
        [*command, *map(str, PHOTOS)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    python = classifier.predict(PHOTOS, top_k=2)
    assert [a["path"] for a in answers] == [str(p) for p in PHOTOS]
    assert [a["top"][0]["label"] for a in answers] == [p.labels[0] for p in python]
    gaps = [
        abs(answer["top"][0]["probability"] - prediction.probabilities[0])
        for answer, prediction in zip(answers, python, strict=True)
    ]  # jpeg-js decodes a level or two away from libjpeg-turbo: measured 0.012 mean, 0.05 max
    assert max(gaps) < 0.06 and sum(gaps) / len(gaps) < 0.02, gaps
    flagged = [a["unknown_score"] > classifier.unknown.stats.threshold for a in answers]
    assert flagged == [p.unknown for p in python]


def test_the_javascript_client_names_a_photo_it_cannot_read(any_size_file, tmp_path):
    if not (shutil.which("node") and (NODE_CLIENT / "node_modules").is_dir()):
        pytest.skip("Node.js or the example's packages are missing")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    command = ["node", str(NODE_CLIENT / "classify.mjs"), str(any_size_file), str(broken)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and str(broken) in result.stderr
