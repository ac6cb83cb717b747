"""Heat maps: they add up to the score, point at the evidence, and look the same from a model
folder, from an exported file without PyTorch, and on the photo at its own size."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_photos, headstart, real_photos
from PIL import Image
from scipy.special import log_softmax
from test_no_torch import BLOCKER

from headstart import Classifier, FitSettings, HeadstartError, RunContext, train
from headstart.backbones.preprocessing import pixels_or_reason
from headstart.evaluation.faithfulness import measure_faithfulness
from headstart.export.onnx import export_classifier
from headstart.model.folder import METADATA_FILE
from headstart.model.heads import PRIOR_KIND, HeadConfig, build_head, logit_gradients

HELD_OUT = real_photos("daisy", 16, skip=20) + real_photos("sunflower", 16, skip=20)


def network_inputs(classifier, photos):
    return np.stack([pixels_or_reason(classifier.preprocessing, p)[0] for p in photos])


@pytest.fixture(scope="module")
def mlp_trained(presplit, cache_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlp")
    settings = FitSettings(strategy="mlp", seed=0, hidden=64)
    return train(presplit, folder, settings=settings, context=RunContext(cache_dir=cache_dir))


def assert_maps_add_up_to_the_logits(classifier, photos):
    """For a linear head the map's mean is the calibrated logit minus its bias, so the means
    plus the biases give back the model's probabilities."""
    probabilities, maps = classifier.explain_pixels(network_inputs(classifier, photos))
    bias = classifier.head.parameters["1.bias"] / classifier.temperature
    rebuilt = log_softmax(maps.mean(axis=(2, 3)) + bias, axis=1)
    assert maps.shape[1] == len(classifier.labels) and maps.shape[2:] == (14, 14)
    np.testing.assert_allclose(rebuilt, np.log(probabilities), atol=1e-5)


def test_linear_maps_add_up_to_the_logits_with_stage_features(trained):
    classifier, _ = trained
    assert classifier.backbone.pooled_stages  # the maps of four stages and the head summed
    assert_maps_add_up_to_the_logits(classifier, HELD_OUT[::4])


def test_explain_gives_the_top_label_or_the_one_asked_for(trained):
    classifier, _ = trained
    photos = [HELD_OUT[0], HELD_OUT[-1]]
    predicted = classifier.predict(photos, top_k=1)
    explained = classifier.explain(photos)
    assert [e.label for e in explained] == [p.labels[0] for p in predicted]
    assert [e.label for e in explained] == ["daisy", "sunflower"]
    for e, p in zip(explained, predicted, strict=True):
        assert e.probability == pytest.approx(p.probabilities[0], abs=2e-3)
    against = classifier.explain(photos[:1], label="sunflower")[0]
    # The same photo's map for the other label is, cell by cell, a different sum of evidence.
    assert against.label == "sunflower" and against.heatmap.mean() < explained[0].heatmap.mean()
    with pytest.raises(HeadstartError, match="'tulip' is not one of the model's"):
        classifier.explain(photos, label="tulip")


@pytest.mark.parametrize("kind", ["linear", "mlp", PRIOR_KIND])
def test_closed_form_gradients_are_autograd_ones(kind):
    torch.manual_seed(0)
    prior = {"prior_features": 12, "prior_classes": 30} if kind == PRIOR_KIND else {}
    config = HeadConfig(kind=kind, in_features=20, num_classes=5, hidden=16, **prior)
    head = build_head(config).eval()
    features = torch.randn(3, 20) * 2
    expected = torch.stack(
        [torch.autograd.functional.jacobian(lambda x: head(x[None])[0], row) for row in features]
    )
    np.testing.assert_allclose(
        logit_gradients(head, kind, features).detach(), expected, atol=1e-5, rtol=1e-4
    )


def assert_maps_point_at_the_evidence(classifier):
    measured = measure_faithfulness(classifier.explain_pixels, classifier.preprocessing, HELD_OUT)
    assert measured.photos == len(HELD_OUT)
    assert measured.deletion_by_map > measured.deletion_at_random
    assert measured.insertion_by_map > measured.insertion_at_random
    return measured


def test_linear_maps_point_at_the_evidence(trained):
    assert_maps_point_at_the_evidence(trained[0])


def test_mlp_maps_add_up_to_the_logits_first_order_part(mlp_trained):
    """For an MLP the weights are the logit's gradient g at the photo's features f: the map's
    mean is g . f, the logit's first-order part."""
    from headstart.model.explanation import heat_map_network

    classifier = mlp_trained
    head = classifier.head.module(classifier.temperature)
    network = heat_map_network(
        classifier.backbone_maps(), head, classifier.head_config, classifier.preprocessing
    )
    with torch.no_grad():
        pixels = torch.from_numpy(network_inputs(classifier, HELD_OUT[::8]))
        features, logits, maps = network(pixels)
        first_order = torch.einsum("nkd,nd->nk", logit_gradients(head, "mlp", features), features)
    np.testing.assert_allclose(maps.mean((2, 3)), first_order, rtol=1e-4, atol=1e-4)
    probabilities, _ = classifier.explain_pixels(pixels.numpy())
    np.testing.assert_allclose(torch.softmax(logits, 1), probabilities, atol=1e-6)


def test_mlp_maps_point_at_the_evidence(mlp_trained):
    assert mlp_trained.head_config.kind == "mlp"
    assert_maps_point_at_the_evidence(mlp_trained)


@pytest.mark.slow  # a fine-tuning run (the session's fixture)
def test_fine_tuned_maps_add_up_and_point_at_the_evidence(finetuned):
    classifier, _ = finetuned
    assert classifier.fine_tuned
    assert_maps_add_up_to_the_logits(classifier, HELD_OUT[::4])
    assert_maps_point_at_the_evidence(classifier)


def rotated_photo(folder):
    """A real photo stored sideways with an EXIF orientation of 6: upright it is portrait."""
    image = Image.open(HELD_OUT[1]).convert("RGB").crop((0, 0, 227, 160))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = folder / "sideways.jpg"
    image.save(path, "JPEG", exif=exif.tobytes())
    return path, (160, 227)  # upright (width, height)


def test_predict_explain_writes_overlays_and_maps_at_the_photo_size(trained, cache_dir, tmp_path):
    _, model = trained
    copy_photos(HELD_OUT[:2], tmp_path / "photos")
    sideways, (width, height) = rotated_photo(tmp_path / "photos")
    copy_photos(HELD_OUT[:1], tmp_path / "photos" / "again")  # the same name in another folder
    out = tmp_path / "why"
    result = headstart(
        "predict", str(model), str(tmp_path / "photos"), "--explain", str(out), cache_dir=cache_dir
    )
    assert result.returncode == 0, result.stderr
    index = json.loads((out / "explanations.json").read_text())
    assert len(index) == 4 and len({entry["overlay"] for entry in index}) == 4
    entry = next(e for e in index if e["image"].endswith("sideways.jpg"))
    values = np.load(out / entry["map"])
    assert values.shape == (height, width) and values.dtype == np.float32
    # The centre crop keeps the middle of the photo: the map is NaN around it.
    assert np.isnan(values[0]).all() and np.isnan(values[-1]).all()
    assert np.isnan(values[:, 0]).all() and np.isnan(values[:, -1]).all()
    assert np.isfinite(values[height // 2, width // 2])
    seen = np.isfinite(values).sum(axis=1)
    assert seen.max() == round(0.875 * width)  # the crop's side, upright
    overlay = Image.open(out / entry["overlay"])
    assert overlay.width >= width and overlay.height > overlay.width  # a portrait, plus a legend

    again = headstart(
        "predict", str(model), str(sideways), "--explain", str(out), cache_dir=cache_dir
    )
    assert again.returncode == 0, again.stderr  # an earlier run's folder is written again


def test_explanations_go_only_where_nothing_is_lost(trained, exported, tmp_path, capsys):
    _, model = trained
    photos = copy_photos(HELD_OUT[:1], tmp_path / "photos")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    for target, message in [
        (tmp_path / "notes", "holds other files"),
        (tmp_path / "photos" / "why", "inside the dataset"),
    ]:
        photos_folder = str(tmp_path / "photos")
        result = headstart("predict", str(model), photos_folder, "--explain", str(target))
        assert result.returncode != 0 and message in result.stderr
    _, onnx_file = exported  # exported without heat maps
    result = headstart("predict", str(onnx_file), str(photos[0]), "--explain", str(tmp_path / "w"))
    assert result.returncode != 0 and "export with --explain" in result.stderr


@pytest.mark.slow  # an export, then a command in a PyTorch-free interpreter
def test_an_exported_file_explains_the_same_without_pytorch(trained, cache_dir, tmp_path):
    classifier, _ = trained
    onnx_file = tmp_path / "why.onnx"
    export_classifier(classifier, onnx_file, explain=True)
    photos = copy_photos(HELD_OUT[::3], tmp_path / "photos")
    blocked = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCKER,
            "predict",
            str(onnx_file),
            str(tmp_path / "photos"),
            "--explain",
            str(tmp_path / "from_onnx"),
        ],
        capture_output=True,
        text=True,
    )
    assert blocked.returncode == 0, blocked.stderr[-2000:]
    folder = classifier.explain(photos)
    from_onnx = json.loads((tmp_path / "from_onnx" / "explanations.json").read_text())
    assert len(from_onnx) == len(folder)
    for own, entry in zip(folder, from_onnx, strict=True):
        assert entry["label"] == own.label
        onnx_map = np.load(tmp_path / "from_onnx" / entry["map"])
        own_map = own.at_photo_size()
        assert np.array_equal(np.isnan(onnx_map), np.isnan(own_map))
        scale = np.nanmax(np.abs(own_map))
        np.testing.assert_allclose(onnx_map / scale, own_map / scale, atol=1e-4, equal_nan=True)


def test_a_training_photo_s_nearest_training_photo_is_itself(trained, presplit):
    classifier, _ = trained
    photo = sorted((presplit / "train" / "sunflower").glob("*.jpg"))[3]
    explained = classifier.explain([photo, HELD_OUT[-1]])
    nearest = explained[0].neighbours
    assert len(nearest) == 3 and nearest[0].path == str(photo)
    assert nearest[0].similarity == pytest.approx(1.0, abs=1e-3) and nearest[0].label == "sunflower"
    unseen = explained[1].neighbours  # a held-out sunflower: near training sunflowers
    assert [n.similarity for n in unseen] == sorted((n.similarity for n in unseen), reverse=True)
    assert unseen[0].similarity < 0.999 and unseen[0].label == "sunflower"
    assert all(Path(n.path).is_relative_to(presplit) and Path(n.path).is_file() for n in unseen)


@pytest.mark.parametrize(
    ("photos", "message"),
    [
        ([["daisy/a.jpg", 2]], "bank_photos[0]: not [path, label index]"),
        ([["", 0]], "bank_photos[0]"),
        ("daisy/a.jpg", "bank_photos: a list"),
        ([["daisy/a.jpg", 0]], "bank_photos names 1 photos for"),
    ],
)
def test_a_crafted_list_of_training_photos_is_refused(trained, tmp_path, photos, message):
    _, folder = trained
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    record = json.loads((copy / METADATA_FILE).read_text())
    record["bank_photos"] = photos
    (copy / METADATA_FILE).write_text(json.dumps(record))
    with pytest.raises(HeadstartError, match=re.escape(message)):
        Classifier.load(copy)


def test_an_unreadable_photo_is_reported_and_the_others_explained(trained, tmp_path):
    classifier, _ = trained
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(HELD_OUT[0].read_bytes()[:300])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    alone = classifier.explain([broken, empty])  # a batch with nothing readable
    assert [e.heatmap for e in alone] == [None, None]
    assert all("not a readable image" in e.error for e in alone)
    mixed = classifier.explain([broken, HELD_OUT[0]])
    assert mixed[0].error and mixed[1].heatmap is not None and mixed[1].label == "daisy"
    with pytest.raises(HeadstartError, match="no heat map"):
        alone[0].at_photo_size()
