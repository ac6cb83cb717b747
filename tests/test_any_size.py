"""`export --any-size`: the decoded photo in, headstart's resize and crop inside the graph."""

import io
import subprocess
import sys

import numpy as np
import pytest
from conftest import FLOWERS, XRAYS, headstart
from fastapi.testclient import TestClient
from PIL import Image
from test_no_torch import BLOCKER

from headstart import HeadstartError
from headstart.data.images import decode_rgb
from headstart.export.onnx import export_classifier
from headstart.export.runtime import OnnxClassifier
from headstart.serving.app import create_app

PHOTOS = sorted(FLOWERS.rglob("*.jpg")) + XRAYS


@pytest.fixture(scope="module")
def any_size(trained, tmp_path_factory):
    classifier, _ = trained
    path = tmp_path_factory.mktemp("any") / "any.onnx"
    export_classifier(classifier, path, any_size=True)
    return classifier, OnnxClassifier(path)


def test_it_agrees_with_the_model_folder_on_real_photos(any_size):
    classifier, runtime = any_size
    assert runtime.any_size and runtime.metadata["headstart.input"] == "image"
    assert runtime.labels == classifier.labels
    ours = [p for p in classifier.predict(PHOTOS, top_k=2)]
    theirs = runtime.predict(PHOTOS, top_k=2)
    agree = [a.labels[0] == b.labels[0] for a, b in zip(ours, theirs, strict=True)]
    gaps = [
        abs(a.probabilities[a.labels.index(b.labels[0])] - b.probabilities[0])
        for a, b in zip(ours, theirs, strict=True)
    ]
    assert sum(agree) >= 0.99 * len(PHOTOS) and max(gaps) < 0.05
    assert np.mean(np.array(gaps) <= 0.01) >= 0.9


@pytest.mark.parametrize("size", [(1000, 240), (240, 1000), (31, 17), (640, 640)])
def test_a_photo_of_any_size_and_shape_is_taken(any_size, size):
    _, runtime = any_size
    photo = Image.open(PHOTOS[0]).convert("RGB").resize(size)
    probabilities = runtime.probabilities(np.asarray(photo)[None])
    assert probabilities.shape == (1, 2) and abs(probabilities.sum() - 1) < 1e-5


def test_the_server_runs_an_any_size_file(any_size):
    _, runtime = any_size
    client = TestClient(create_app(runtime))
    data = PHOTOS[-10].read_bytes()
    response = client.post("/predict?top_k=1", content=data, headers={"content-type": "image/jpeg"})
    assert response.status_code == 200, response.text
    expected = runtime.predict([PHOTOS[-10]], top_k=1)[0]
    top = response.json()["predictions"][0]["top"][0]
    assert top["label"] == expected.labels[0]
    assert top["probability"] == pytest.approx(expected.probabilities[0], abs=1e-5)
    whole = np.asarray(decode_rgb(data))
    assert runtime.network_input(data).shape == whole.shape  # the photo, not the crop


def test_what_it_cannot_do_is_refused(trained, tmp_path):
    classifier, folder = trained
    with pytest.raises(HeadstartError, match="one or the other"):
        export_classifier(classifier, tmp_path / "x.onnx", explain=True, any_size=True)
    result = headstart(
        "export", str(folder), "-o", str(tmp_path / "q.onnx"), "--any-size",
        "--quantize", "int8", "--calibration", str(tmp_path),
    )  # fmt: skip
    assert result.returncode != 0 and "not --any-size" in result.stderr


@pytest.mark.slow  # a command in a PyTorch-free interpreter
def test_predicting_with_it_needs_no_pytorch(any_size, tmp_path):
    _, runtime = any_size
    image = Image.open(PHOTOS[3]).convert("RGB").resize((900, 500))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    (tmp_path / "wide.png").write_bytes(buffer.getvalue())
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER, "predict", str(runtime.path), str(tmp_path / "wide.png")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert runtime.predict([tmp_path / "wide.png"], top_k=1)[0].labels[0] in done.stdout
