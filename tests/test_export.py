"""ONNX export with the preprocessing inside the graph, and prediction without PyTorch."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from conftest import real_photos

from headstart.backbones.network import PixelsToFeatures, as_cached
from headstart.export.runtime import OnnxClassifier


def test_onnx_file_carries_labels_and_preprocessing(exported):
    _, path = exported
    model = onnx.load(str(path))
    metadata = {p.key: p.value for p in model.metadata_props}
    assert json.loads(metadata["headstart.labels"]) == ["daisy", "sunflower"]
    assert json.loads(metadata["headstart.input_size"]) == [224, 224]
    assert json.loads(metadata["headstart.backbone"])["name"] == "efficientnet_lite0"
    assert path.with_suffix(".labels.txt").read_text().split() == ["daisy", "sunflower"]
    pixels = model.graph.input[0].type.tensor_type
    assert pixels.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in pixels.shape.dim][1:] == [224, 224, 3]


class AsCached(torch.nn.Module):
    def forward(self, features):
        return as_cached(features)


def test_onnx_runtime_agrees_with_pytorch_on_real_photos(exported):
    classifier, path = exported
    runtime = OnnxClassifier(path)
    photos = real_photos("daisy", 4, skip=20) + real_photos("sunflower", 4, skip=20)
    pixels = np.stack([classifier.preprocessing.pixels(p.read_bytes()) for p in photos])
    backbone = classifier.extractor().backbone
    network = torch.nn.Sequential(
        PixelsToFeatures(backbone.build_module(), classifier.preprocessing),
        AsCached(),  # the features the model folder's head reads
        classifier.head.module(),
    ).eval()
    with torch.no_grad():
        logits = network(torch.from_numpy(pixels)) / classifier.temperature
        reference = torch.softmax(logits, 1).numpy()
    for batch in (pixels, pixels[:1]):  # the batch dimension is dynamic
        probabilities = runtime.probabilities(batch)
        assert probabilities.shape == (len(batch), 2)
        assert np.abs(probabilities - reference[: len(batch)]).max() < 1e-4


def test_prediction_runs_with_pytorch_blocked(exported, tmp_path):
    classifier, path = exported
    photos = [str(p) for p in real_photos("sunflower", 2, skip=24)]
    (tmp_path / "broken.jpg").write_text("not a photo")
    script = (
        "import sys, runpy\n"
        "sys.modules['torch'] = None  # any import of torch now fails\n"
        "sys.argv = ['headstart', 'predict', *sys.argv[1:]]\n"
        "runpy.run_module('headstart.cli', run_name='__main__')\n"
    )
    command = [sys.executable, "-c", script, str(path), *photos, str(tmp_path / "broken.jpg")]
    result = subprocess.run([*command, "--json", "-k", "2"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)
    assert [len(p.get("top", [])) for p in predictions] == [2, 2, 0]
    assert "not a readable image" in predictions[2]["error"]
    # The model folder's own ranking and probabilities, without PyTorch.
    for printed, ours in zip(predictions, classifier.predict(photos, top_k=2), strict=False):
        assert [entry["label"] for entry in printed["top"]] == ours.labels
        assert [e["probability"] for e in printed["top"]] == pytest.approx(ours.probabilities, 1e-3)


@pytest.mark.slow
def test_int8_quantization_keeps_predictions_and_metadata(exported, presplit, tmp_path):
    from headstart.export.quantize import compare, quantize_int8

    classifier, path = exported
    train = sorted(presplit.glob("train/*/*.jpg"))
    val = sorted(presplit.glob("val/*/*.jpg"))
    calibration = np.stack([classifier.preprocessing.pixels(p.read_bytes()) for p in train])
    int8 = quantize_int8(path, tmp_path / "model.int8.onnx", calibration)
    runtime = OnnxClassifier(int8)
    assert runtime.labels == ["daisy", "sunflower"]
    assert runtime.metadata["headstart.quantization"].startswith("int8")
    pixels = np.stack([classifier.preprocessing.pixels(p.read_bytes()) for p in val])
    truth = np.array([classifier.labels.index(p.parent.name) for p in val])
    report = compare(path, int8, pixels, truth)
    assert report["int8_bytes"] < 0.4 * report["fp32_bytes"]
    assert report["top1_agreement"] >= 14 / 16
    assert report["int8_accuracy"] >= report["fp32_accuracy"] - 2 / 16


def test_quantizing_without_calibration_data_is_a_clear_error(trained, tmp_path):
    _, folder = trained
    command = [sys.executable, "-m", "headstart.cli", "export", str(folder), "--quantize", "int8"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2 and "needs --calibration DATA" in result.stderr


@pytest.mark.slow
def test_export_quantize_from_the_command_line(trained, presplit, cache_dir, tmp_path):
    _, folder = trained
    target = tmp_path / "cli.onnx"
    command = [sys.executable, "-m", "headstart.cli", "export", str(folder), "-o", str(target)]
    command += ["--quantize", "int8", "--calibration", str(presplit), "--cache-dir", str(cache_dir)]
    result = subprocess.run([*command, "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert OnnxClassifier(tmp_path / "cli.int8.onnx").labels == ["daisy", "sunflower"]
    report = json.loads(result.stdout)
    assert report["split"] == "val" and report["images"] == 16, "checked on the held-out split"
    assert report["top1_agreement"] >= 0.875


@pytest.mark.slow  # an ONNX export
def test_a_head_on_the_imagenet_classifier_saves_predicts_and_exports(
    cache_dir, tmp_path, monkeypatch
):
    """Few photos a class, and the folds left only the ImageNet classifier's log-probabilities
    to choose (forced here: whether they win depends on the data): the head computes them from
    the features, and the model folder, a reloaded copy and the ONNX file agree on held-out
    photos, PyTorch-free runtime included."""
    from conftest import copy_photos

    import headstart.training.fit as fit
    from headstart import Classifier, RunContext, train
    from headstart.model.heads import PRIOR_KIND

    monkeypatch.setattr(fit, "leading", lambda widths, total: ())
    for label in ("daisy", "sunflower"):
        copy_photos(real_photos(label, 36), tmp_path / "data" / label)
    context = RunContext(cache_dir=cache_dir)
    classifier = train(tmp_path / "data", tmp_path / "model", context=context)
    config = classifier.head_config
    assert config.kind == PRIOR_KIND and (config.prior_features, config.prior_classes) == (
        1280,
        1000,
    )
    note = next(n for n in classifier.summary.notes if "cross-validation" in n)
    assert "the ImageNet classifier's" in note and "log-probabilities" in note
    photos = real_photos("daisy", 3, skip=33) + real_photos("sunflower", 3, skip=33)
    ours = classifier.predict(photos, top_k=2)
    predicted = np.array([p.probabilities for p in ours])
    reloaded = Classifier.load(tmp_path / "model", context)
    assert reloaded.head_config == config
    again = np.array([p.probabilities for p in reloaded.predict(photos, top_k=2)])
    np.testing.assert_allclose(again, predicted, atol=1e-6)
    onnx_file = tmp_path / "model" / "model.onnx"
    from headstart.export.onnx import export_classifier

    export_classifier(reloaded, onnx_file)
    runtime = OnnxClassifier(onnx_file)
    theirs = runtime.predict(photos, top_k=2)
    assert [p.labels for p in theirs] == [p.labels for p in ours]
    np.testing.assert_allclose([p.probabilities for p in theirs], predicted, atol=1e-4)
