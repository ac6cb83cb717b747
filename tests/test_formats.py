"""`export -o NAME.tflite` and `-o NAME.mlpackage`: the ONNX export's network in other formats,
checked against it on real photos (TFLite) and as far as Linux allows (Core ML)."""

import importlib.util
import json
import os

import numpy as np
import pytest
from conftest import XRAYS, headstart, real_photos

from headstart.export.runtime import OnnxClassifier

PHOTOS = real_photos("daisy", 8, skip=20) + real_photos("sunflower", 8, skip=20) + XRAYS[:4]


def needs(module: str, extra: str):
    """Skip where the extra is not installed, except in CI, which installs every extra."""
    missing = importlib.util.find_spec(module) is None and not os.environ.get("CI")
    return pytest.mark.skipif(missing, reason=f"pip install 'headstart[{extra}]'")


def network_inputs(classifier, photos) -> np.ndarray:
    return np.stack([classifier.preprocessing.pixels(p.read_bytes()) for p in photos])


@pytest.fixture(scope="module")
def tflite_file(trained, tmp_path_factory):
    _, folder = trained
    path = tmp_path_factory.mktemp("tflite") / "flowers.tflite"
    result = headstart("export", str(folder), "-o", str(path))
    assert result.returncode == 0, result.stderr
    return path


@pytest.mark.slow  # a conversion: about 20 s
@needs("litert_torch", "tflite")
def test_tflite_agrees_with_onnx_runtime_on_real_photos(exported, tflite_file):
    from headstart.export.tflite import TfliteClassifier

    classifier, onnx_file = exported
    tflite, onnx = TfliteClassifier(tflite_file), OnnxClassifier(onnx_file)
    assert tflite.labels == classifier.labels
    assert tflite.preprocessing == classifier.preprocessing
    assert tflite_file.with_suffix(".labels.txt").read_text().split() == classifier.labels
    details = tflite.runner.get_input_details()["pixels"]
    assert details["dtype"] == np.uint8 and list(details["shape"][1:3]) == list(
        classifier.preprocessing.input_size
    )
    pixels = network_inputs(classifier, PHOTOS)
    ours = tflite.outputs(pixels)
    probabilities, scores, _ = onnx._batched(list(pixels), len(pixels))
    assert np.abs(ours["probabilities"] - probabilities).max() < 1e-4
    assert np.abs(ours["unknown_score"] - scores).max() < 1e-4
    assert (ours["probabilities"].argmax(1) == probabilities.argmax(1)).all()


@needs("litert_torch", "tflite")
def test_the_format_follows_the_suffix_and_a_mismatch_is_refused(trained, tmp_path):
    _, folder = trained
    for args, message in [
        (["-o", str(tmp_path / "m.onnx"), "--format", "tflite"], "writes -o NAME.tflite"),
        (["-o", str(tmp_path / "m.tflite"), "--any-size"], "plain model"),
        (["-o", str(tmp_path / "m.tflite"), "--format", "keras"], "unknown export format"),
    ]:
        result = headstart("export", str(folder), *args)
        assert result.returncode != 0 and message in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # a conversion: about 15 s
@needs("coremltools", "coreml")
def test_core_ml_package_describes_an_image_classifier_with_our_labels(trained, tmp_path):
    import coremltools

    classifier, folder = trained
    path = tmp_path / "flowers.mlpackage"
    result = headstart("export", str(folder), "-o", str(path))
    assert result.returncode == 0, result.stderr
    spec = coremltools.utils.load_spec(str(path))
    (image,) = spec.description.input
    assert image.name == "image" and image.type.imageType.colorSpace == image.type.imageType.RGB
    size = (image.type.imageType.height, image.type.imageType.width)
    assert size == tuple(classifier.preprocessing.input_size)
    assert [o.name for o in spec.description.output] == ["classLabel", "classLabel_probs"]
    assert class_labels(spec) == classifier.labels
    metadata = dict(spec.description.metadata.userDefined)
    assert json.loads(metadata["headstart.labels"]) == classifier.labels
    assert "headstart.unknown_threshold" not in metadata  # the file has no unknown score
    again = headstart("export", str(folder), "-o", str(path))  # replaced whole, not merged
    assert again.returncode == 0 and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@needs("coremltools", "coreml")
def test_the_program_core_ml_converts_matches_the_onnx_export_on_real_photos(exported):
    import torch

    from headstart.export.coreml import exported_program

    classifier, onnx_file = exported
    pixels = network_inputs(classifier, PHOTOS)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float()  # as Core ML gives an image
    program = exported_program(classifier).module()
    with torch.no_grad():
        ours = torch.cat([program(image[None]) for image in images]).numpy()
    assert np.abs(ours - OnnxClassifier(onnx_file).probabilities(pixels)).max() < 1e-4


def class_labels(spec) -> list[str]:
    """The labels of the program's classify op, as Core ML reports them."""
    function = spec.mlProgram.functions["main"]
    block = function.block_specializations[function.opset]
    (classify,) = [op for op in block.operations if op.type == "classify"]
    values = classify.inputs["classes"].arguments[0].value.immediateValue.list.values
    return [v.immediateValue.tensor.strings.values[0] for v in values]
